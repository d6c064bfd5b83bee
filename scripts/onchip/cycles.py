"""Estimated cycles per inference from the executed instruction stream: QEMU runs the firmware
one instruction per block (`-singlestep -d cpu,nochain`: the registers before every executed
instruction; this QEMU, 7.2, has no TCG plugins), the ELF's disassembly says what each address
holds, and Arm's published timing tables turn instruction classes into cycles.

These are ESTIMATES, not measurements: the tables are per-instruction issue costs of the
processor alone; real parts add bus and flash effects that only a board shows. Two models:

- zero wait states: the table's cycles;
- W flash wait states (the `wait_states` argument): W more for every data access that reads
  flash (a load whose base register points below 0x20000000: weights, tables, literal pools;
  an LDM / LDRD counts each word) and for every taken branch (its refetch from flash);
  sequential instruction fetch is assumed hidden by the prefetch buffer.

Cortex-M4, "Cortex-M4 Technical Reference Manual" r0p1 (ARM DDI 0439B), Table 3-1 "Cortex-M4
instruction set summary": data processing, MUL, long multiplies (UMULL, SMULL, UMLAL, SMLAL),
the DSP instructions (SMLAD, SXTB16, UXTB16, SSAT, USAT, ...) 1; MLA / MLS 2; LDR / STR (any
width) 2 (neighbouring loads and stores can pipeline to 1: not modelled); LDRD / STRD, LDM /
STM / PUSH / POP 1 + N (N registers); POP with PC 1 + N + P; B / BL / BX / BLX / CBZ / CBNZ
taken 1 + P, not taken 1; a data-processing write to PC 1 + P; SDIV / UDIV 2 to 12 (12 used);
IT 1 (it may fold to 0). P, the pipeline refill, is 1 to 3: 2 used.

Cortex-M0, "Cortex-M0 Technical Reference Manual" r0p0 (ARM DDI 0432C), Table 3-1
"Cortex-M0 instruction summary": data processing and MULS 1 (the single-cycle multiplier
option; the small one takes 32); LDR / STR 2; LDM / STM / PUSH 1 + N; POP 1 + N, with PC
3 + N; B taken 3 (conditional not taken 1); BL 4; BX / BLX 3; a write to PC (ADD / MOV PC) 3.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scripts.onchip.toolchain import Firmware, qemu_command, run_tool

__all__ = [
    "WAIT_STATES",
    "Insn",
    "CycleEstimate",
    "disassemble",
    "insn_cycles",
    "estimate",
    "trace_estimate",
    "layer_regions",
]

# the typical flash wait states the estimates state: a Cortex-M0 part at ~48 MHz (1), a
# Cortex-M4 part at ~100 MHz without a flash cache (3)
WAIT_STATES = {"m0": 1, "m3": 3, "m4": 3}
REFILL = 2  # P of the Cortex-M4 table
RAM_START = 0x20000000
_REGS = {f"r{i}": i for i in range(13)} | {
    "sb": 9,
    "sl": 10,
    "fp": 11,
    "ip": 12,
    "sp": 13,
    "lr": 14,
    "pc": 15,
}
_BRANCHES = {"b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh"}


@dataclass(frozen=True)
class Insn:
    size: int  # bytes
    op: str  # mnemonic without condition, width or flag suffixes: "ldr", "push", "b"
    text: str  # the operands
    base: int | None  # a load's base register (15 = pc), None for anything else
    regs: int  # LDM / STM / PUSH / POP: the registers moved; LDRD / STRD: 2
    offset: int = 0  # a load's immediate offset inside the brackets ("[r3, #64]": 64)


def _mnemonic(raw: str) -> str:
    m = raw.split(".")[0].lower()
    for cond in (
        "eq",
        "ne",
        "cs",
        "cc",
        "hs",
        "lo",
        "mi",
        "pl",
        "vs",
        "vc",
        "hi",
        "ls",
        "ge",
        "lt",
        "gt",
        "le",
        "al",
    ):
        if m.endswith(cond) and m[: -len(cond)] in _BRANCHES | {"b"}:
            return m[: -len(cond)]
    return m


def _parse(mnemonic: str, operands: str, size: int) -> Insn:
    op = _mnemonic(mnemonic)
    base = None
    regs = 1
    if op.startswith("ldm") or op.startswith("stm") or op in ("push", "pop"):
        regs = max(1, operands.count(",") + 1 - (0 if op in ("push", "pop") else 1))
        if "{" in operands:
            inside = operands[operands.index("{") + 1 : operands.index("}")]
            regs = sum(_reg_span(part.strip()) for part in inside.split(",") if part.strip())
        if op.startswith("ldm"):
            base = _REGS.get(operands.split(",")[0].strip().rstrip("!"))
        elif op == "pop":
            base = 13
    elif op.startswith("ldr") or op.startswith("str"):
        if op in ("ldrd", "strd"):
            regs = 2
        if op.startswith("ldr"):
            m = re.search(r"\[(\w+)", operands)
            base = _REGS.get(m.group(1)) if m else 15  # "ldr r0, [pc, #8]" or a label
            # gcc reaches static arrays from one anchor register plus an offset: the array
            # read is at base + offset (a post-indexed "[r3], #4" reads at the base)
            imm = re.search(r"\[\w+,\s*#(-?\d+)\]", operands)
            if imm and base != 15:
                return Insn(size, op, operands, base, regs, int(imm.group(1)))
    return Insn(size, op, operands, base, regs)


def _reg_span(part: str) -> int:
    if "-" in part:
        a, b = (_REGS.get(x.strip(), 0) for x in part.split("-"))
        return b - a + 1
    return 1


def disassemble(elf: Path) -> dict[int, Insn]:
    """Address -> instruction, for every instruction objdump finds in the ELF."""
    out = run_tool(["arm-none-eabi-objdump", "-d", str(elf)], text=True).stdout
    table: dict[int, Insn] = {}
    line = re.compile(r"^\s*([0-9a-f]+):\s+([0-9a-f]{4})(?: ([0-9a-f]{4}))?\s+(\S+)\s*(.*)$")
    for text in out.splitlines():
        m = line.match(text)
        if not m:
            continue
        size = 4 if m.group(3) else 2
        table[int(m.group(1), 16)] = _parse(m.group(4), m.group(5).split(";")[0], size)
    return table


def insn_cycles(cpu: str, insn: Insn, taken: bool) -> int:
    """The table's cycles of one executed instruction (module docstring)."""
    op, n = insn.op, insn.regs
    writes_pc = "pc" in insn.text.split(",")[0] if insn.text else False
    if cpu == "m0":
        if op in ("ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "str", "strb", "strh"):
            return 2
        if op.startswith("ldm") or op.startswith("stm") or op == "push":
            return 1 + n
        if op == "pop":
            return (3 if "pc" in insn.text else 1) + n
        if op == "bl":
            return 4
        if op in ("bx", "blx"):
            return 3
        if op == "b":
            return 3 if taken else 1
        if writes_pc:
            return 3
        return 1
    refill = REFILL
    if op in ("ldrd", "strd"):
        return 1 + n
    if op.startswith("ldr") or op.startswith("str"):
        return 2 + (refill if writes_pc else 0)
    if op.startswith("ldm") or op.startswith("stm") or op == "push":
        return 1 + n
    if op == "pop":
        return 1 + n + (refill if "pc" in insn.text else 0)
    if op in _BRANCHES:
        return 1 + refill if taken else 1
    if op in ("mla", "mls"):
        return 2
    if op in ("sdiv", "udiv"):
        return 12
    if writes_pc:
        return 1 + refill
    return 1


@dataclass
class CycleEstimate:
    cpu: str
    wait_states: int
    instructions: int = 0
    cycles: int = 0  # zero wait states
    flash_loads: int = 0  # data accesses that read flash (words)
    taken_branches: int = 0
    classes: Counter = field(default_factory=Counter)
    layers: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def cycles_waiting(self) -> int:
        """Cycles at `wait_states` flash wait states."""
        return self.cycles + self.wait_states * (self.flash_loads + self.taken_branches)

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "wait_states": self.wait_states,
            "instructions": self.instructions,
            "cycles_0ws": self.cycles,
            f"cycles_{self.wait_states}ws": self.cycles_waiting,
            "flash_loads": self.flash_loads,
            "taken_branches": self.taken_branches,
            "classes": dict(self.classes.most_common()),
            "layers": self.layers,
        }


def layer_regions(elf: Path) -> list[tuple[int, int, str]]:
    """(start, end, layer) of each layer's weight and table arrays (siq_w_<layer>,
    siq_t_<layer>, a depthwise layer's siq_dw_<layer>, cmsis_w_<layer>): a load from one of
    them says which layer runs."""
    out = run_tool(["arm-none-eabi-nm", "-S", str(elf)], text=True).stdout
    regions = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        m = re.match(r"^(?:siq_(?:[wt]|dw)|cmsis_w)_(\w+)$", parts[3])
        if m:
            start = int(parts[0], 16)
            regions.append((start, start + int(parts[1], 16), m.group(1)))
    return sorted(regions)


def estimate(
    cpu: str,
    code: dict[int, Insn],
    records: list[tuple[int, list[int]]],
    regions: list[tuple[int, int, str]] | None = None,
    wait_states: int | None = None,
) -> CycleEstimate:
    """Cycles of an executed stream: (pc, registers r0..r15 before it) per instruction."""
    est = CycleEstimate(cpu, WAIT_STATES[cpu] if wait_states is None else wait_states)
    _accumulate(est, code, iter(records), regions or [])
    return est


def _accumulate(est, code, records, regions) -> None:  # noqa: ANN001
    layer = "input"  # until the first layer's weights are read: the input's conversion
    prev: tuple[int, Insn, list[int]] | None = None

    def close(pc_next: int | None) -> None:
        nonlocal layer
        assert prev is not None
        pc, insn, regs = prev
        taken = pc_next is not None and pc_next != pc + insn.size and insn.op in _BRANCHES | {"pop"}
        flash = 0
        if insn.base is not None:
            address = (pc + 4) & ~3 if insn.base == 15 else regs[insn.base] + insn.offset
            if address < RAM_START:
                flash = insn.regs if insn.op.startswith("ldm") or insn.op == "ldrd" else 1
                for start, end, name in regions:
                    if start <= address < end:
                        layer = name
                        break
        c = insn_cycles(est.cpu, insn, taken)
        est.instructions += 1
        est.cycles += c
        est.flash_loads += flash
        est.taken_branches += int(taken and insn.op in _BRANCHES | {"pop"})
        est.classes[insn.op] += 1
        row = est.layers.setdefault(
            layer, {"instructions": 0, "cycles_0ws": 0, "flash_loads": 0, "taken_branches": 0}
        )
        row["instructions"] += 1
        row["cycles_0ws"] += c
        row["flash_loads"] += flash
        row["taken_branches"] += int(taken)

    for pc, regs in records:
        if prev is not None:
            close(pc)
        insn = code.get(pc)
        prev = (pc, insn, regs) if insn is not None else None
    if prev is not None:
        close(None)


def _records(stream, start: int, call: int):  # noqa: ANN001, ANN202
    """(pc, registers) of the instructions of the `call`-th entry into `start` (0-based), up
    to its return, from a `-d cpu` log of one instruction per block."""
    entries, end = 0, None
    lines = iter(stream)
    for l0 in lines:
        if not l0.startswith("R00="):
            continue
        l1, l2, l3 = next(lines), next(lines), next(lines)
        pc = int(l3[43:51], 16)
        if end is None:
            if pc == start:
                if entries == call:
                    end = int(l3[30:38], 16) & ~1  # the return address in LR
                else:
                    entries += 1
                    continue
            else:
                continue
        elif pc == end:
            return
        regs = [
            int(line[k * 13 + 4 : k * 13 + 12], 16) for line in (l0, l1, l2, l3) for k in range(4)
        ]
        yield pc, regs


def trace_estimate(fw: Firmware, call: int = 2, timeout: float = 1800.0) -> CycleEstimate:
    """Run `fw` (build it with one image) under QEMU one instruction at a time and estimate
    the cycles of `siq_predict`'s `call`-th run (the harness's first two calls are its
    null-argument checks). The log streams through a FIFO: it is about 270 bytes per
    instruction."""
    code = disassemble(fw.elf)
    symbols = run_tool(["arm-none-eabi-nm", str(fw.elf)], text=True).stdout
    start = next(
        int(line.split()[0], 16) & ~1
        for line in symbols.splitlines()
        if line.split()[-1] == "siq_predict"
    )
    est = CycleEstimate(fw.cpu, WAIT_STATES[fw.cpu])
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "trace"
        os.mkfifo(fifo)
        cmd = qemu_command(fw, "-singlestep", "-d", "cpu,nochain", "-D", str(fifo))
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with open(fifo, encoding="ascii", errors="replace", buffering=1 << 20) as stream:
                _accumulate(est, code, _records(stream, start, call), layer_regions(fw.elf))
        finally:
            proc.kill()  # the rest of the run (the calibration loop) is not needed
            proc.wait(timeout=timeout)
    if est.instructions == 0:
        raise RuntimeError(f"no instructions of siq_predict call {call} in the trace")
    return est
