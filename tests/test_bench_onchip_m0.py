"""bench_onchip --m0net (bench/onchip_m0.py): its bits configs, and onchip.md's smallest-chip
section, which judges the least-flash configuration at >= 99.2 % against the M0's budget."""

from __future__ import annotations

import pytest

from bench.bench_onchip import main
from bench.onchip_m0 import BUDGET, parse_bits
from bench.onchip_report import m0_section


def test_bits_configs_are_parsed_and_bad_ones_refused(capsys) -> None:
    assert parse_bits("W4") == (4, None)
    assert parse_bits("w4:conv3=3,fc=2") == (4, {"conv3": 3, "fc": 2})
    for bad in ("4", "W", "W4:", "W4:conv3", "W4:conv3=x", "Wx:conv3=1", "W4:=1"):
        with pytest.raises(ValueError, match="not like"):
            parse_bits(bad)
    assert main(["--m0net", "--m0net-bits", "W4:conv3"]) == 2  # refused before any training
    assert "is not like" in capsys.readouterr().err


def _row(config: str, accuracy: float, flash: int, ram: int) -> dict:
    build = {
        "flags": "-Os", "images": 10, "equal": True, "flash_bytes": flash, "ram_bytes": ram,
        "stack_bytes": 200, "instructions_median": 3.0e7, "instructions_per_mac": 30.0,
    }  # fmt: skip
    layer = {
        "name": "conv1", "op": "conv2d", "format": "bits", "weight_bytes": 192,
        "table_bytes": 32, "const_bytes": 56, "out_bytes": 864, "macs": 172_800,
    }  # fmt: skip
    return {
        "config": config, "weights": 13_740, "c_accuracy": accuracy, "host_equal": True,
        "host_images": 10_000, "arena_bytes": 1600, "builds": [build], "layers": [layer],
    }  # fmt: skip


def _result(rows: list[dict]) -> dict:
    env = {"command": "python -m bench.bench_onchip --m0net", "when": "now", "machine": "x"}
    return {
        "rows": rows, "budget": BUDGET, "parameters": 14_000, "float_accuracy": 0.994,
        "float_seconds": 60.0, "environment": {**env, "note": "A note."},
    }  # fmt: skip


def test_the_section_judges_the_least_flash_config_at_the_accuracy() -> None:
    assert m0_section(None) == []
    rows = [
        _row("W4", 0.9931, 10_016, 1_816),
        _row("W4:conv3=3", 0.9925, 8_672, 1_816),
        _row("W4:conv3=2", 0.9915, 7_328, 1_816),  # smallest, but under 99.2 %
    ]
    text = "\n".join(m0_section(_result(rows)))
    assert "| MNIST integer accuracy ≥ 99.2 % (W4:conv3=3) | 99.25 % | **pass** |" in text
    assert "| flash ≤ 12,288 B (-Os) | 8,672 B | **pass** |" in text
    assert "| RAM ≤ 2,048 B | 1,816 B | **pass** |" in text
    assert "| stretch: flash ≤ 8,192 B | 8,672 B | **FAIL** |" in text
    assert "3 configuration(s)" in text
    low = "\n".join(m0_section({**_result([rows[2]]), "complete": False}))
    assert "**Not reached by this run**" in low and "99.15 %" in low
    assert "the run was stopped before the others" in low
