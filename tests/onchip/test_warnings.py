"""The generated library builds warning-free with its strict flags (warnings are errors) at
every optimisation level users build with: -O0, -O1, -O2, -O3 and -Os, with the host's gcc
and, where the cross toolchain is installed, for the Cortex-M0, M3 and M4. (At -O3,
arm-none-eabi-gcc 12 once warned -Waggressive-loop-optimizations on the row kernels' dead
tail loop: issue 29.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.onchip.toolchain import ARM_GCC, STRICT_FLAGS, cpu_flags, missing_arm_tools
from shared.bundle import decode_bundle
from shared.cgen import CModel, generate_bundle_c
from tests.factories import make_random_bundle, random_dag_bundle

LEVELS = ["-O0", "-O1", "-O2", "-O3", "-Os"]


def libraries() -> dict[str, CModel]:
    """Every row kernel (t4 with 4 rows a pass and a tail, t2, t3, i8, bits), nibble and byte
    activations, and the DAG ops (random DAGs with every op)."""
    chains = {
        f"{arch}_w{w}a{a}": decode_bundle(
            make_random_bundle(3, arch=arch, weight_bits=w, activation_bits=a, per_channel=True)
        )
        for arch, w, a in [
            ("lenet", 4, 4),
            ("photo", 2, 5),
            ("gray_strided", 3, 4),
            ("photo", 8, 8),
            ("photo", 1, 6),
        ]
    }
    dags = {
        f"dag{seed}_w{w}a{a}": random_dag_bundle(seed, activation_bits=a, weight_bits=w)
        for seed, w, a in [(7, 4, 4), (6, 8, 8)]
    }
    return {name: generate_bundle_c(bundle) for name, bundle in {**chains, **dags}.items()}


def compile_all(cc: str, target_flags: list[str], work: Path) -> list[str]:
    """Compile each library at each level; the failures, with the compiler's first lines."""
    failures = []
    for name, model in libraries().items():
        folder = work / name
        folder.mkdir()
        for file, text in model.files.items():
            (folder / file).write_text(text)
        for level in LEVELS:
            cmd = [cc, *STRICT_FLAGS, *target_flags, level, "-c", "-o", str(folder / "m.o")]
            done = subprocess.run(
                [*cmd, str(folder / "siq_model.c")], capture_output=True, text=True
            )
            if done.returncode != 0:
                failures.append(f"{name} {level}: {done.stderr[:600]}")
    return failures


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc")
def test_host_gcc_at_every_level(tmp_path):
    assert compile_all("gcc", [], tmp_path) == []


@pytest.mark.skipif(missing_arm_tools() is not None, reason=f"{missing_arm_tools()}")
@pytest.mark.parametrize("cpu", ["m0", "m3", "m4"])
def test_cortex_m_at_every_level(tmp_path, cpu):
    assert compile_all(ARM_GCC, [*cpu_flags(cpu), "-ffreestanding"], tmp_path) == []
