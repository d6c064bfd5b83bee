"""The server's dashboard in a real browser, without training anything: the token dialog
answered with Enter, the form's limits read from the API's schema, chart axes whose labels
differ, the jobs and bundles tables on a phone, and the page's icon. `python -m server` runs
as a real process (with a token, no jobs); where a test needs jobs or bundles to show, the
page's list requests are answered with made-up rows that the API's own models accept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.api import BundleList, QuantizeJobList
from tests.browser.conftest import DESKTOP, PHONE, serve
from tests.conftest import ServiceProcess

TOKEN = "dashboard-page-token"
BUNDLE_ID = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("dashboard-page")
    yield from serve("server", data_dir, root, SIQ_API_TOKEN=TOKEN)


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(**DESKTOP)
    try:
        yield context.new_page()
    finally:
        context.close()


def _job_fields(server: ServiceProcess) -> dict[str, dict[str, Any]]:
    """The body of POST /quantize-jobs as /openapi.json states it: field -> its non-null schema."""
    openapi = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    ref = openapi["paths"]["/quantize-jobs"]["post"]["requestBody"]["content"]["application/json"]
    body = openapi["components"]["schemas"][ref["schema"]["$ref"].rsplit("/", 1)[1]]
    return {
        name: next((b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"), prop)
        for name, prop in body["properties"].items()
    }


def _open_form(page, server: ServiceProcess) -> Any:
    page.goto(server.url + "/")
    form = page.get_by_test_id("job-form")
    form.get_by_test_id("dataset").locator("option[value=digits]").wait_for(state="attached")
    # the limits are set once the page has read the schema
    form.locator("[name=epochs][max]").wait_for(state="attached")
    return form


def test_enter_in_the_token_dialog_uses_the_token(page, server) -> None:
    form = _open_form(page, server)
    form.get_by_test_id("dataset").select_option("digits")
    page.locator("summary").click()
    form.get_by_test_id("train-limit").fill("1")  # the server's minimum is 2: no job runs
    form.evaluate("f => f.noValidate = true")  # let the server judge it
    form.get_by_test_id("submit-job").click()

    page.get_by_test_id("token-dialog").wait_for(state="visible", timeout=10000)
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-input").press("Enter")

    status = page.get_by_test_id("submit-status")
    page.wait_for_function(
        "el => el.textContent.startsWith('Not submitted')", arg=status.element_handle()
    )
    # the token was taken and the request retried with it: the server's answer is about the
    # limit, not the token (Enter used to press the dialog's first button, Cancel)
    assert "train_limit" in status.inner_text(), status.inner_text()
    assert page.evaluate("sessionStorage.getItem('siq-api-token')") == TOKEN
    assert not page.get_by_test_id("token-dialog").is_visible()
    assert page.get_by_test_id("token-state").inner_text().startswith("token set for this tab")


def test_cancel_and_escape_leave_the_dialog_without_a_token(page, server) -> None:
    form = _open_form(page, server)
    for leave in ("cancel", "Escape"):
        form.get_by_test_id("submit-job").click()
        page.get_by_test_id("token-dialog").wait_for(state="visible", timeout=10000)
        page.get_by_test_id("token-input").fill("typed but not used")
        if leave == "cancel":
            page.get_by_test_id("token-cancel").click()
        else:
            page.keyboard.press("Escape")
        page.get_by_test_id("token-dialog").wait_for(state="hidden")
        status = page.get_by_test_id("submit-status")
        page.wait_for_function(
            "el => el.textContent.startsWith('Not submitted')", arg=status.element_handle()
        )
        assert page.evaluate("sessionStorage.getItem('siq-api-token')") is None


def test_the_form_allows_what_the_api_allows(page, server) -> None:
    fields = _job_fields(server)
    form = _open_form(page, server)
    for name in ("epochs", "retrain_epochs", "max_iterations", "train_limit", "test_limit", "seed"):
        field = form.locator(f"[name={name}]")
        schema = fields[name]
        assert float(field.get_attribute("max")) == schema["maximum"], name
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        assert float(field.get_attribute("min")) == low, name
        assert field.get_attribute("step") == ("1" if schema["type"] == "integer" else "any")
    for name in ("weight_bits", "activation_bits"):
        values = form.locator(f"[name={name}] option").evaluate_all("os => os.map(o => +o.value)")
        low, high = int(fields[name]["minimum"]), int(fields[name]["maximum"])
        assert values == list(range(low, high + 1)), name
    choices = form.locator("[name=weight_quantizer] option").evaluate_all(
        "os => os.map(o => o.value)"
    )
    assert choices == fields["weight_quantizer"]["enum"]

    def below(schema: dict[str, Any]) -> str:
        """The first value under the range: an exclusive minimum itself, else minimum - 1."""
        low = schema.get("exclusiveMinimum")
        return str(low if low is not None else schema["minimum"] - 1)

    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.locator("summary").click()
    epochs, iterations = form.get_by_test_id("epochs"), form.get_by_test_id("max-iterations")
    for field, value, valid in [
        (epochs, str(fields["epochs"]["maximum"] * 10), False),  # 1,000 used to pass
        (epochs, below(fields["epochs"]), False),  # an exclusive minimum the page checks
        (epochs, str(fields["epochs"]["maximum"]), True),
        (iterations, str(fields["max_iterations"]["maximum"] + 1), False),
        (iterations, str(fields["max_iterations"]["maximum"]), True),
    ]:
        field.fill(value)
        assert field.evaluate("f => f.checkValidity()") is valid, (value, valid)
        field.fill("")
    epochs.fill(str(fields["epochs"]["maximum"] * 10))
    form.get_by_test_id("submit-job").click()
    assert epochs.evaluate("f => f.validationMessage")  # the browser says what is wrong
    assert posts == []  # nothing was sent


def _ticks(page, chart: str, axis: str) -> list[str]:
    """The tick labels of one axis: the y axis's stand right-aligned left of it."""
    anchor = "end" if axis == "y" else "middle"
    ticks = page.locator(f"#{chart} .grid text[text-anchor={anchor}]:not(.label)")
    return ticks.evaluate_all("ts => ts.map(t => t.textContent)")


def test_chart_axes_label_each_tick_differently(page, server, artifacts: Path) -> None:
    _open_form(page, server)
    # accuracies a tenth of a point apart, as a well-converged SIQ run gives, drawn by the
    # job page's own function into its (shown) section
    page.evaluate(
        """document.getElementById("job").hidden = false;
           plotIterations([
             {iteration: 1, accuracy_after_kmeans: 0.9931, accuracy_after_retrain: 0.9942},
             {iteration: 2, accuracy_after_kmeans: 0.9935, accuracy_after_retrain: 0.9941,
              codebook_change: 0.0012},
             {iteration: 3, accuracy_after_kmeans: 0.9938, accuracy_after_retrain: 0.9943,
              codebook_change: 0.0007}])"""
    )
    accuracy = _ticks(page, "iterations-chart", "y")
    assert len(accuracy) >= 3 and len(set(accuracy)) == len(accuracy), accuracy
    values = [float(t) for t in accuracy]
    assert values == sorted(values) and values[0] > 99 and values[-1] < 99.5, accuracy
    assert _ticks(page, "iterations-chart", "x") == ["1", "2", "3"]
    change = _ticks(page, "change-chart", "y")
    assert len(change) >= 3 and len(set(change)) == len(change) and float(change[0]) == 0, change

    page.evaluate(
        """plotBundles([0.9931, 0.9934, 0.9938].map((a, i) => ({dataset: "mnist",
             weight_bits: 4, activation_bits: 4 - i, bytes: 9000 + 1000 * i,
             quantized_accuracy: a})))"""
    )
    size = _ticks(page, "size-chart", "y")
    assert len(size) >= 3 and len(set(size)) == len(size), size
    page.locator(".charts").screenshot(path=str(artifacts / "dashboard-charts-desktop.png"))


def _lists(jobs: int, bundles: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A page of succeeded jobs and a bundle list, checked against the API's own models."""
    job = {
        "status": "succeeded",
        "dataset": "office10",
        "weight_bits": 4,
        "activation_bits": 5,
        "config": {"dataset": "office10", "weight_bits": 4, "activation_bits": 5},
        "created": "2026-12-07T10:00:00Z",
        "finished": "2026-12-07T10:05:00Z",
        "progress": {"stage": "done", "fraction": 1.0, "message": "done"},
        "result": {
            "float_accuracy": 0.6916,
            "quantized_accuracy": 0.6848,
            "bundle_id": BUNDLE_ID,
            "bundle_bytes": 34_567,
            "float_bytes": 812_345,
            "seconds": 1234.5,
        },
    }
    items = [{**job, "id": f"{i:08x}-0000-4000-8000-00000000000{i % 10}"} for i in range(jobs)]
    job_list = {"items": items, "total": jobs, "limit": 20, "offset": 0}
    bundle_list = {
        "items": [
            {
                "id": BUNDLE_ID[:-2] + f"{i:02x}",
                "dataset": "office10",
                "weight_bits": 4,
                "activation_bits": 5,
                "quantized_accuracy": 0.6848,
                "float_accuracy": 0.6916,
                "bytes": 34_567 + i,
                "created": "2026-12-07T10:05:00Z",
            }
            for i in range(bundles)
        ]
    }
    QuantizeJobList.model_validate(job_list)
    BundleList.model_validate(bundle_list)
    return job_list, bundle_list


def test_a_phone_shows_every_column_of_the_tables(browser, server, artifacts: Path) -> None:
    job_list, bundle_list = _lists(jobs=3, bundles=3)

    def answer(route) -> None:
        path = route.request.url.removeprefix(server.url).split("?")[0]
        if path == "/quantize-jobs":
            return route.fulfill(json=job_list)
        if path == "/bundles":
            return route.fulfill(json=bundle_list)
        if path.endswith("/manifest"):
            return route.fulfill(json={"metrics": {"float_bytes": 812_345}})
        return route.continue_()

    context = browser.new_context(**PHONE)
    try:
        page = context.new_page()
        page.route("**/*", answer)
        page.goto(server.url + "/")
        for table, rows in (("jobs-table", 3), ("bundles-table", 3)):
            locator = page.get_by_test_id(table)
            locator.locator("tbody tr").nth(rows - 1).wait_for()
            headers = locator.locator("thead th").count()
            cells = locator.locator("tbody td")
            assert cells.count() == rows * headers
            for box in cells.evaluate_all("cs => cs.map(c => c.getBoundingClientRect().toJSON())"):
                # each cell lies inside the screen: nothing to scroll sideways to
                assert box["left"] >= 0 and box["right"] <= PHONE["viewport"]["width"], box
            # the column names, hidden with the header row, are on each cell
            labels = cells.evaluate_all(
                "cs => cs.map(c => getComputedStyle(c, '::before').content)"
            )
            names = locator.locator("thead th").all_inner_texts()
            assert labels[: len(names) - 1] == [f'"{n}"' for n in names[: len(names) - 1]]
            scroller = locator.locator("xpath=..")
            assert scroller.evaluate("s => s.scrollWidth <= s.clientWidth"), table
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(artifacts / "dashboard-tables-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_page_has_an_icon(page, server) -> None:
    failed: list[str] = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    _open_form(page, server)
    href = page.locator("link[rel=icon]").get_attribute("href", timeout=5000)
    icon = page.request.get(server.url + href)
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert failed == []
