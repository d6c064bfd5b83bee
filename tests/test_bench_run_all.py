"""`make bench` (bench/run_all.py): runs every benchmark's main(), then the report; skips
missing ones, keeps going after a failure, and exits non-zero when any failed."""

from __future__ import annotations

import sys
import types

import pytest

from bench import run_all


def _fake(monkeypatch: pytest.MonkeyPatch, name: str, main) -> None:
    module = types.ModuleType(name)
    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)


def test_runs_all_in_order_skips_missing_and_reports_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def ok_main(argv: list[str] | None = None) -> int:
        calls.append(f"ok {argv}")
        return 0

    _fake(monkeypatch, "bench.fake_ok", ok_main)
    _fake(monkeypatch, "bench.fake_boom", lambda argv=None: 1 / 0)
    _fake(monkeypatch, "bench.fake_report", lambda: calls.append("report"))
    monkeypatch.setattr(
        run_all,
        "benchmark_modules",
        lambda: ["bench.fake_ok", "bench.fake_missing_xyz", "bench.fake_boom"],
    )
    monkeypatch.setattr(run_all, "report_modules", lambda: ["bench.fake_report"])

    assert run_all.main([]) == 1
    assert calls == ["ok []", "report"]
    out = capsys.readouterr().out
    assert "skip bench.fake_missing_xyz" in out and "FAIL bench.fake_boom" in out
    assert "fake_ok=ok" in out and "fake_boom=failed" in out


def test_filter_words_select_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def run_one(name: str) -> str:
        ran.append(name)
        return "ok"

    monkeypatch.setattr(run_all, "report_modules", lambda: [])
    monkeypatch.setattr(run_all, "_run_one", run_one)
    assert run_all.main(["client"]) == 0
    assert ran == ["bench.bench_client"]


def test_discovers_every_bench_script() -> None:
    names = run_all.benchmark_modules()
    assert len(names) == len(set(names))
    assert all(name.startswith("bench.bench_") for name in names)
    missing = [n for n in names if not (run_all.BENCH_DIR / f"{n.split('.')[-1]}.py").is_file()]
    assert not missing, f"listed in BENCHMARKS but not in bench/: {missing}"
    assert run_all.report_modules() == ["bench.report"]
