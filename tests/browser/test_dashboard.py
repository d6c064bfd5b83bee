"""The server's dashboard in a real browser: a tiny digits job submitted with the form (the
server has a token, so the page asks for it), watched on its job page until it succeeded,
its iterations plotted, and its bundle listed with a download link; screenshots on desktop
and phone sizes. `python -m server` runs as a real process; `digits` needs no data files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import DESKTOP, PHONE, serve
from tests.conftest import ServiceProcess

pytest.importorskip("server.training.pipeline", reason="needs the server extra (torch)")
# training a bundle or a job inside a test: minutes when the machine is shared, not seconds
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "dashboard-test-token"
JOB_TIMEOUT_MS = 400_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServiceProcess]:
    yield from serve("server", data_dir, tmp_path_factory.mktemp("dashboard"), SIQ_API_TOKEN=TOKEN)


def test_submit_a_job_and_watch_it_succeed(browser, server, artifacts: Path) -> None:
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        form = page.get_by_test_id("job-form")
        form.get_by_test_id("dataset").locator("option[value=digits]").wait_for(state="attached")
        form.get_by_test_id("dataset").select_option("digits")
        form.get_by_test_id("weight-bits").select_option("2")
        form.get_by_test_id("activation-bits").select_option("4")
        form.get_by_test_id("epochs").fill("3")
        page.locator("summary").click()
        form.get_by_test_id("retrain-epochs").fill("0.5")
        form.get_by_test_id("max-iterations").fill("2")
        form.get_by_test_id("train-limit").fill("400")
        form.get_by_test_id("test-limit").fill("60")
        form.get_by_test_id("submit-job").click()

        # the server answers 401: the page asks for the token, then retries
        dialog = page.get_by_test_id("token-dialog")
        dialog.wait_for(state="visible", timeout=10000)
        page.get_by_test_id("token-input").fill(TOKEN)
        page.get_by_test_id("token-ok").click()
        status = page.get_by_test_id("submit-status")
        status.locator("a").wait_for(timeout=10000)
        job_id = status.get_attribute("data-job-id")
        assert job_id and page.evaluate("sessionStorage.getItem('siq-api-token')") == TOKEN

        row = page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')
        row.wait_for(timeout=10000)
        page.screenshot(path=str(artifacts / "dashboard-submitted-desktop.png"), full_page=True)

        status.locator("a").click()  # the job page
        detail = page.get_by_test_id("job-detail")
        detail.wait_for(state="visible")
        finished = page.locator('[data-testid="job-status"][data-status="succeeded"]')
        finished.wait_for(timeout=JOB_TIMEOUT_MS)
        assert row.get_attribute("data-status") in ("succeeded", "running")  # polled list
        # two iterations, each a point on both accuracy lines, and the second's codebook change
        chart = page.get_by_test_id("iterations-chart")
        assert chart.locator("circle").count() == 4
        assert page.get_by_test_id("change-chart").locator("rect[fill]").count() >= 2
        page.screenshot(path=str(artifacts / "dashboard-job-desktop.png"), full_page=True)

        job = httpx.get(f"{server.url}/quantize-jobs/{job_id}", timeout=10).json()
        bundle_id = job["result"]["bundle_id"]
        bundle_row = page.locator(f'[data-testid="bundle-row"][data-bundle-id="{bundle_id}"]')
        bundle_row.wait_for(timeout=30000)
        text = bundle_row.inner_text()
        assert "digits" in text and "W2 A4" in text and "×" in text  # the ratio to float
        assert page.get_by_test_id("size-chart").locator("circle").count() == 2  # W2A4 + float
        link = bundle_row.locator("a")
        assert link.get_attribute("href") == f"/bundles/{bundle_id}"
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == f"{bundle_id}.siq"
        page.locator("#bundles").screenshot(path=str(artifacts / "dashboard-bundles-desktop.png"))

        phone = browser.new_context(**PHONE)
        try:
            small = phone.new_page()
            small.goto(f"{server.url}/#job/{job_id}")
            small.locator('[data-testid="job-status"][data-status="succeeded"]').wait_for()
            small.get_by_test_id("bundles-table").locator('[data-testid="bundle-row"]').wait_for()
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "the page scrolls sideways on a phone"
            small.screenshot(path=str(artifacts / "dashboard-job-phone.png"), full_page=True)
        finally:
            phone.close()
    finally:
        context.close()


def test_a_bad_job_is_refused_with_the_servers_message(browser, server) -> None:
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        page.evaluate(f"sessionStorage.setItem('siq-api-token', '{TOKEN}')")
        form = page.get_by_test_id("job-form")
        form.get_by_test_id("dataset").locator("option[value=digits]").wait_for(state="attached")
        form.get_by_test_id("dataset").select_option("digits")
        page.locator("summary").click()
        form.get_by_test_id("train-limit").fill("0")  # the server's minimum is 1
        # the browser's own min=1 check would stop the form: let the server judge
        form.evaluate("f => f.noValidate = true")
        form.get_by_test_id("submit-job").click()
        status = page.get_by_test_id("submit-status")
        page.wait_for_function(
            "el => el.textContent.startsWith('Not submitted')", arg=status.element_handle()
        )
        assert "train_limit" in status.inner_text()
    finally:
        context.close()
