"""Compile and run generated libraries: with the host's gcc, and cross-compiled for Cortex-M0 /
Cortex-M3 / Cortex-M4 into a QEMU firmware (tests and the on-chip benchmark use this; the
generator itself needs no compiler).

    exe = host_build(cmodel, work)              ; logits = host_run(exe, images)
    fw = firmware_build(cmodel, work, "m4", images) ; run = qemu_run(fw)

`opt` picks the optimisation flags: None is the project's own (OWN_FLAGS), or e.g. ["-Os"].
A peer library (bench/cmsis_peer.py) links through `link_library` + `firmware_link` instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scripts.onchip.board import (
    CALIBRATION_LOOPS,
    HOST_HARNESS_C,
    STARTUP_C,
    harness_c,
    linker_script,
)
from shared.cgen.emit import CModel

__all__ = [
    "STRICT_FLAGS",
    "OWN_FLAGS",
    "CPUS",
    "Board",
    "missing_host_tools",
    "missing_arm_tools",
    "host_build",
    "host_run",
    "Firmware",
    "QemuRun",
    "firmware_build",
    "firmware_link",
    "link_library",
    "cpu_flags",
    "run_tool",
    "ARM_GCC",
    "qemu_run",
    "qemu_command",
    "library_sizes",
    "linked_library_sizes",
    "undefined_symbols",
]

STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
OPT = "-O2"
# the flags the bench builds the generated library with: what its header recommends, no more
# (the table kernels turn off GCC's pre-allocation scheduling themselves: runtime.SIQ_KERNEL)
OWN_FLAGS = [OPT]


@dataclass(frozen=True)
class Board:
    mcpu: str  # gcc -mcpu
    qemu: str  # qemu-system-arm -M
    flash: str = "4M"  # the memory the firmware links into
    ram: str = "1M"


# mps2-an385 / an386: Arm's FPGA images (big memories); microbit: the nRF51822, a Cortex-M0
# (ARMv6-M: no DSP, no divide, no 32x32->64 multiply) with 256 KB flash and 16 KB SRAM
CPUS = {
    "m0": Board("cortex-m0", "microbit", "256K", "16K"),
    "m3": Board("cortex-m3", "mps2-an385"),
    "m4": Board("cortex-m4", "mps2-an386"),
}
ARM_GCC, ARM_SIZE, QEMU = "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"
ICOUNT_SHIFT = 0  # one instruction = 1 ns of guest time


def missing_host_tools() -> str | None:
    return None if shutil.which("gcc") else "gcc not found"


def missing_arm_tools() -> str | None:
    """None when the cross compiler, its C library headers and QEMU are installed, else why not
    (`apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm`)."""
    absent = [t for t in (ARM_GCC, ARM_SIZE, QEMU) if shutil.which(t) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
    return None


def run_tool(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, **kw)
    if done.returncode != 0:
        err = (
            done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else done.stderr
        )
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({done.returncode}):\n{err[-4000:]}")
    return done


def _write(model: CModel, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    for name, text in model.files.items():
        (work / name).write_text(text)
    return work / "siq_model.c"


def host_build(model: CModel, work: Path) -> Path:
    """The library and a stdin/stdout harness, built with the strict flags."""
    src = _write(model, work)
    (work / "host_main.c").write_text(HOST_HARNESS_C)
    exe = work / "siq_host"
    run_tool(["gcc", *STRICT_FLAGS, OPT, "-o", str(exe), str(src), str(work / "host_main.c")])
    return exe


def host_run(exe: Path, images: np.ndarray, classes: int, timeout: float = 120.0) -> np.ndarray:
    """uint8 images (N, C, H, W) -> int64 logits (N, classes)."""
    data = np.ascontiguousarray(images, dtype=np.uint8).tobytes()
    out = run_tool([str(exe)], input=data, timeout=timeout).stdout
    return np.frombuffer(out, dtype="<i4").reshape(len(images), classes).astype(np.int64)


@dataclass
class Firmware:
    cpu: str
    elf: Path
    obj: Path  # siq_model.c compiled alone
    library: dict[str, int]  # siq_model.o section sizes: text, rodata, data, bss
    firmware: dict[str, int]  # the whole firmware's
    images: int


@dataclass
class QemuRun:
    logits: np.ndarray  # (N, classes) int64
    ticks: list[int] = field(default_factory=list)  # SysTick ticks per inference
    calibration_ticks: int = 0  # ticks of 2 * CALIBRATION_LOOPS instructions
    stack_bytes: int = 0  # deepest stack use below main's frame during siq_predict
    seconds: float = 0.0

    @property
    def instructions(self) -> list[float]:
        """Instructions per inference (the calibration loop: subs + bne per iteration)."""
        per_tick = 2 * CALIBRATION_LOOPS / self.calibration_ticks
        return [t * per_tick for t in self.ticks]


def undefined_symbols(obj: Path) -> set[str]:
    """Symbols an object file needs from elsewhere (the library may need memcpy / memset)."""
    out = run_tool(["arm-none-eabi-nm", "-u", str(obj)], text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def library_sizes(obj: Path, size_tool: str = ARM_SIZE) -> dict[str, int]:
    """Section sizes of an object file, summed into text / rodata / data / bss."""
    out = run_tool([size_tool, "-A", str(obj)], text=True).stdout
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        for key in sizes:
            if name == f".{key}" or name.startswith(f".{key}."):
                sizes[key] += size
        if name.startswith(".vectors"):
            sizes["rodata"] += size
    return sizes


def cpu_flags(cpu: str) -> list[str]:
    return [f"-mcpu={CPUS[cpu].mcpu}", "-mthumb", "-mfloat-abi=soft"]


def firmware_build(
    model: CModel, work: Path, cpu: str, images: np.ndarray, opt: list[str] | None = None
) -> Firmware:
    """siq_model.c (strict flags) + startup + a harness with the images in flash -> ELF."""
    src = _write(model, work)
    flags = [*cpu_flags(cpu), *(OWN_FLAGS if opt is None else opt)]
    obj = work / f"siq_model_{cpu}.o"
    run_tool([ARM_GCC, *STRICT_FLAGS, *flags, "-ffreestanding", "-c", "-o", str(obj), str(src)])
    return firmware_link(obj, work, cpu, images, flags)


def link_library(objs: list[Path], out: Path, roots: list[str]) -> Path:
    """Objects -> one relocatable object holding only what `roots` reach (a library's flash as
    linked, unused kernels dropped); compile the objects with -ffunction-sections
    -fdata-sections."""
    keep = [f"-Wl,--undefined={r}" for r in roots]
    run_tool(
        [ARM_GCC, "-nostdlib", "-r", "-Wl,--gc-sections", f"-Wl,--entry={roots[0]}", *keep]
        + ["-o", str(out), *map(str, objs)]
    )
    return out


def linked_library_sizes(fw: Firmware, flags: list[str]) -> dict[str, int]:
    """The library's sections as linked into a firmware for `fw.cpu`: siq_model.o with what
    it takes from the C library and libgcc (memcpy, memset, the 64-bit multiply helper of an
    ARMv6-M, ...), unreached code dropped: what it costs a part's flash and RAM (the harness
    and startup code are not counted). `flags`: those it was compiled with (they pick the
    multilib)."""
    out = fw.obj.with_name(f"{fw.obj.stem}_linked.o")
    run_tool(
        [ARM_GCC, *cpu_flags(fw.cpu), *flags, "-nostdlib", "-r", "-Wl,--gc-sections"]
        + ["-Wl,--entry=siq_predict", "-Wl,--undefined=siq_predict", "-o", str(out)]
        + [str(fw.obj), "-lc", "-lgcc"]
    )
    return library_sizes(out)


def firmware_link(
    obj: Path, work: Path, cpu: str, images: np.ndarray, flags: list[str]
) -> Firmware:
    """A compiled library (its `siq_model.h` in `work`) + startup + a harness with the images
    in flash -> ELF for `cpu`'s board, built with the same `flags`."""
    board = CPUS[cpu]
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    (work / "startup.c").write_text(STARTUP_C)
    (work / "main.c").write_text(harness_c(len(flat), flat.shape[1], flat.tobytes()))
    (work / "link.ld").write_text(linker_script(board.flash, board.ram))
    elf = work / f"siq_{cpu}.elf"
    board_flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", *flags, "-ffreestanding"]
    run_tool(
        [
            ARM_GCC,
            *board_flags,
            "-nostdlib",
            "-nostartfiles",
            "-T",
            str(work / "link.ld"),
            "-o",
            str(elf),
            str(obj),
            str(work / "startup.c"),
            str(work / "main.c"),
            # memcpy / memset from newlib (optimised per architecture): what a library that
            # calls them gets on a real part, not a byte loop of the harness
            "-lc",
            "-lgcc",
        ]
    )
    return Firmware(cpu, elf, obj, library_sizes(obj), library_sizes(elf), len(flat))


_LINE = re.compile(r"^([LTCS]) (.*)$")


def qemu_command(fw: Firmware, *extra: str) -> list[str]:
    """The QEMU command line that runs `fw` on its board, counting instructions (-icount)."""
    return [
        QEMU,
        "-M",
        CPUS[fw.cpu].qemu,
        "-display",
        "none",
        "-serial",
        "null",
        "-monitor",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        f"shift={ICOUNT_SHIFT}",
        *extra,
        "-kernel",
        str(fw.elf),
    ]


def qemu_run(fw: Firmware, classes: int, timeout: float = 120.0) -> QemuRun:
    """Run the firmware on its board; raise unless every line it owes came back."""
    import time

    cmd = qemu_command(fw)
    started = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    out = done.stdout + done.stderr  # semihosting writes to QEMU's stderr
    # a fault before semihosting works exits 0 with no output: only SIQ-OK counts
    if done.returncode != 0 or "SIQ-OK" not in out:
        raise RuntimeError(
            f"firmware on {CPUS[fw.cpu].qemu} failed (status {done.returncode}); output:\n{out[-2000:]}"
        )
    logits: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    run = QemuRun(logits=np.zeros((0, classes), np.int64), seconds=seconds)
    for line in out.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        kind, vals = m.group(1), [int(v) for v in m.group(2).split()]
        if kind == "L":
            logits[vals[0]] = vals[1:]
        elif kind == "T":
            ticks[vals[0]] = vals[1]
        elif kind == "C":
            run.calibration_ticks = vals[0]
        else:
            run.stack_bytes = vals[0]
    if sorted(logits) != list(range(fw.images)) or sorted(ticks) != list(range(fw.images)):
        raise RuntimeError(f"firmware printed {len(logits)} of {fw.images} results")
    run.logits = np.array([logits[i] for i in range(fw.images)], dtype=np.int64)
    run.ticks = [ticks[i] for i in range(fw.images)]
    return run
