"""RayRunner's Ray Client connection: an aborted connection (the client server's per-client
server failed to start) is tried again; other errors, and the last attempt's, are raised."""

from __future__ import annotations

import pytest

ray_runner = pytest.importorskip("server.service.ray_runner")


class FakeRay:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures, self.inits, self.shutdowns = failures, 0, 0

    def init(self, **kwargs) -> None:
        self.inits += 1
        if self.failures:
            raise self.failures.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake(monkeypatch):
    def install(failures: list[Exception]) -> FakeRay:
        ray = FakeRay(failures)
        monkeypatch.setattr(ray_runner.ray, "init", ray.init)
        monkeypatch.setattr(ray_runner.ray, "shutdown", ray.shutdown)
        monkeypatch.setattr(ray_runner.time, "sleep", lambda s: None)
        return ray

    return install


def test_an_aborted_connection_is_tried_again(fake):
    ray = fake([ConnectionAbortedError("Initialization failure from server")] * 2)
    ray_runner._init_client("ray://head:10001", {})
    assert ray.inits == 3 and ray.shutdowns == 2


def test_the_last_abort_and_other_errors_are_raised(fake):
    n = ray_runner.CLIENT_CONNECT_ATTEMPTS
    ray = fake([ConnectionAbortedError("again")] * n)
    with pytest.raises(ConnectionAbortedError):
        ray_runner._init_client("ray://head:10001", {})
    assert ray.inits == n
    ray = fake([ConnectionError("unreachable")])
    with pytest.raises(ConnectionError):
        ray_runner._init_client("ray://head:10001", {})
    assert ray.inits == 1  # not an abort: no second try
