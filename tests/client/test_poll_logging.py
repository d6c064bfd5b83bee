"""The client logs what its polls of the training server find when that changes, not every
poll: waiting for the first bundle was 939 "404 Not Found" lines, then a 304 every 2 s
(httpx's own INFO line per request, and a warning per failed poll)."""

from __future__ import annotations

import logging

import httpx
import pytest

from client.logs import configure_logging
from shared.bundle import bundle_id


def poll_log(caplog: pytest.LogCaptureFixture, app, times: int) -> list[str]:
    """What `times` polls log (the client's records, and any of httpx's at INFO or above)."""
    caplog.clear()
    for _ in range(times):
        app.state.manager.refresh()
    return [r.getMessage() for r in caplog.records]


def test_polls_log_changes_of_state_only(make_app, server, bundle_a, bundle_b, caplog) -> None:
    caplog.set_level(logging.INFO, logger="client.bundles")
    app = make_app("latest:digits", server)

    waiting = poll_log(caplog, app, 20)  # the server has no bundle yet: 404s
    assert len(waiting) == 1 and "no bundle for 'digits' yet" in waiting[0], waiting

    server.publish(bundle_a)
    first = poll_log(caplog, app, 20)  # one swap, then 304s
    assert len(first) == 1 and bundle_id(bundle_a) in first[0], first

    server.down = True
    down = poll_log(caplog, app, 20)
    assert len(down) == 1 and "fetch failed" in down[0], down

    server.down = False
    back = poll_log(caplog, app, 20)
    assert back == [f"bundle {bundle_id(bundle_a)} is current"], back

    server.publish(bundle_b)
    swapped = poll_log(caplog, app, 5)
    assert len(swapped) == 1 and bundle_id(bundle_b) in swapped[0], swapped


def test_a_refused_bundle_is_reported_once(make_app, server, bundle_a, caplog) -> None:
    caplog.set_level(logging.INFO, logger="client.bundles")
    app = make_app("latest:digits", server)
    server.publish(bundle_a)
    server.tamper = True
    refused = poll_log(caplog, app, 10)
    assert len(refused) == 1 and "refused" in refused[0], refused


def test_httpx_request_lines_are_off_unless_debugging(caplog) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(304))
    before = logging.getLogger("httpx").level
    try:
        for level, lines in (("info", 0), ("debug", 1)):
            configure_logging(level)
            caplog.clear()
            with caplog.at_level(level.upper()), httpx.Client(transport=transport) as http:
                http.get("http://server.test/bundles/latest")
            found = [r for r in caplog.records if r.name == "httpx"]
            assert len(found) == lines, (level, [r.getMessage() for r in found])
    finally:
        logging.getLogger("httpx").setLevel(before)
