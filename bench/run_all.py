"""`make bench`: run every benchmark's `main()` in turn so bench/results/ is regenerated.

A benchmark that is not there yet is skipped with a message; one that fails is reported and
the rest still run. Exit status 1 when any benchmark failed.

    python -m bench.run_all                  # all of them
    python -m bench.run_all mnist client     # only those whose module name contains a word
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path

__all__ = ["BENCHMARKS", "benchmark_modules", "report_modules", "run_all", "main"]

BENCH_DIR = Path(__file__).resolve().parent
# Known benchmarks, cheap ones first; any other bench/bench_*.py runs after them.
BENCHMARKS = [
    "bench.bench_client",
    "bench.bench_api_latency",
    "bench.bench_reliability",
    "bench.bench_mnist",
    "bench.bench_handwriting",  # after bench_mnist: it adds a section to mnist.md
    "bench.bench_office10",
    "bench.bench_onchip",
    "bench.bench_scale",
    "bench.bench_compression",
]


def benchmark_modules() -> list[str]:
    found = sorted(f"bench.{p.stem}" for p in BENCH_DIR.glob("bench_*.py"))
    return BENCHMARKS + [name for name in found if name not in BENCHMARKS]


def report_modules() -> list[str]:
    """The report / plot scripts (they read the results), run after every benchmark."""
    names = {p.stem for pattern in ("report*.py", "plot*.py") for p in BENCH_DIR.glob(pattern)}
    return [f"bench.{stem}" for stem in sorted(names)]


def _run_one(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            print(f"[bench] skip {name}: not written yet", flush=True)
            return "missing"
        raise
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"[bench] skip {name}: it has no main()", flush=True)
        return "missing"
    print(f"[bench] run  {name}", flush=True)
    started = time.perf_counter()
    try:
        code = entry([]) if _takes_argv(entry) else entry()
    except SystemExit as exc:
        code = exc.code
    except Exception:
        traceback.print_exc()
        code = 1
    seconds = time.perf_counter() - started
    ok = code in (None, 0)
    print(f"[bench] {'done' if ok else 'FAIL'} {name} in {seconds:.1f} s", flush=True)
    return "ok" if ok else "failed"


def _takes_argv(entry) -> bool:
    try:
        params = inspect.signature(entry).parameters
    except (TypeError, ValueError):
        return False
    return len(params) > 0


def run_all(words: list[str]) -> dict[str, str]:
    names = [n for n in benchmark_modules() if not words or any(w in n for w in words)]
    outcome = {name: _run_one(name) for name in names}
    for name in report_modules():
        outcome[name] = _run_one(name)
    return outcome


def main(argv: list[str] | None = None) -> int:
    outcome = run_all(sys.argv[1:] if argv is None else argv)
    print("[bench] summary: " + ", ".join(f"{n.split('.')[-1]}={s}" for n, s in outcome.items()))
    return 1 if "failed" in outcome.values() else 0


if __name__ == "__main__":
    sys.exit(main())
