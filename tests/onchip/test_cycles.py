"""scripts/onchip/cycles.py: instruction classes -> cycles from the Cortex-M0 / M4 tables, flash
loads and taken branches from the registers, layers from the weight arrays a load reads; and
one real trace of a small firmware on the M4 whose instruction count equals -icount's."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.onchip.cycles import _parse, estimate, insn_cycles, trace_estimate
from scripts.onchip.toolchain import firmware_build, missing_arm_tools, qemu_run
from shared.bundle import decode_bundle
from shared.cgen import generate_bundle_c
from tests.factories import make_random_bundle
from tests.onchip.conftest import engine_logits
from tests.onchip.test_host import sparse_images


def test_the_tables_classes() -> None:
    ldr, smlad = _parse("ldr", "r3, [r2, #4]", 2), _parse("smlad", "r0, r1, r2, r0", 4)
    pop_pc, push = _parse("pop", "{r4, r5, r6, pc}", 2), _parse("push", "{r4-r7, lr}", 2)
    bne, mla, ldm = (
        _parse("bne.n", "1a4 <x>", 2),
        _parse("mla", "r0, r1, r2, r3", 4),
        _parse("ldmia", "r0!, {r1, r2, r3}", 2),
    )
    assert (ldr.base, push.regs, pop_pc.regs, ldm.base, ldm.regs, bne.op) == (2, 5, 4, 0, 3, "b")
    # Cortex-M4 (ARM DDI 0439B Table 3-1), P = 2
    m4 = [insn_cycles("m4", i, t) for i, t in [(ldr, False), (smlad, False), (mla, False)]]
    assert m4 == [2, 1, 2]
    assert [insn_cycles("m4", bne, True), insn_cycles("m4", bne, False)] == [3, 1]
    assert [insn_cycles("m4", pop_pc, True), insn_cycles("m4", push, False)] == [7, 6]
    # Cortex-M0 (ARM DDI 0432C Table 3-1)
    assert [insn_cycles("m0", bne, True), insn_cycles("m0", bne, False)] == [3, 1]
    assert [insn_cycles("m0", ldr, False), insn_cycles("m0", pop_pc, True)] == [2, 7]
    assert insn_cycles("m0", _parse("bl", "100 <f>", 4), True) == 4


def test_flash_loads_taken_branches_and_layers_from_the_registers() -> None:
    code = {
        0x100: _parse("ldr", "r0, [r1, #0]", 2),  # r1 -> conv1's weights in flash
        0x102: _parse("ldr", "r0, [r2, #0]", 2),  # r2 -> RAM
        0x104: _parse("bne.n", "100 <x>", 2),
        0x106: _parse("adds", "r0, #1", 2),
    }
    regs_flash = [0] * 16
    regs_flash[1], regs_flash[2] = 0x1000, 0x20000010
    regions = [(0x1000, 0x1100, "conv1"), (0x2000, 0x2100, "fc1")]
    stream = [(0x100, regs_flash), (0x102, regs_flash), (0x104, regs_flash)] * 2
    stream += [(0x106, regs_flash)]
    est = estimate("m4", code, stream, regions, wait_states=3)
    # two rounds: ldr 2 + ldr 2 + branch (taken 3, then not taken 1) + adds 1
    assert est.instructions == 7
    assert est.cycles == 2 + 2 + 3 + 2 + 2 + 1 + 1
    assert (est.flash_loads, est.taken_branches) == (2, 1)
    assert est.cycles_waiting == est.cycles + 3 * 3
    assert list(est.layers) == ["conv1"] and est.layers["conv1"]["instructions"] == 7


@pytest.mark.skipif(missing_arm_tools() is not None, reason="Cortex-M toolchain absent")
def test_a_trace_counts_what_icount_counts(tmp_path) -> None:
    bundle = decode_bundle(
        make_random_bundle(3, arch="gray_strided", weight_bits=4, activation_bits=4)
    )
    shape = tuple(bundle.manifest["input"][k] for k in ("channels", "height", "width"))
    images = sparse_images(np.random.default_rng(0), 1, shape)
    fw = firmware_build(generate_bundle_c(bundle), tmp_path, "m4", images)
    run = qemu_run(fw, engine_logits(bundle, images).shape[1])
    est = trace_estimate(fw)
    # -icount also counts the timer reads around the call (siq_ticks: a few dozen)
    assert 0 <= run.instructions[0] - est.instructions <= 64
    assert est.cycles > est.instructions and est.cycles_waiting > est.cycles
    assert set(est.layers) <= {"input", *(layer["name"] for layer in bundle.manifest["graph"])}


@pytest.mark.skipif(missing_arm_tools() is not None, reason="Cortex-M toolchain absent")
def test_a_depthwise_layer_has_its_region(tmp_path) -> None:
    """A depthwise layer's weights are siq_dw_<node>: its instructions are its own, not the
    layer's before it (bench_onchip's per-node table of the office10 MobileNet)."""
    from scripts.onchip.cycles import layer_regions
    from tests.factories import GraphBuilder

    b = GraphBuilder(2, (3, 9, 9))
    x = b.depthwise(b.conv("input", 8, 3, name="stem"), 3, padding=1, name="dw")
    bundle = b.bundle(b.linear(b.global_avgpool(x), 4, activation="none", name="fc"))
    images = np.zeros((1, 3, 9, 9), dtype=np.uint8)
    fw = firmware_build(generate_bundle_c(bundle), tmp_path, "m4", images)
    assert {name for _, _, name in layer_regions(fw.elf)} == {"stem", "dw", "fc"}


def test_a_load_through_an_anchor_names_the_array_at_base_plus_offset() -> None:
    """gcc reads static arrays from one anchor register plus an offset: a load at conv1's
    start + 0x1000 reads fc1's array, not conv1's (the per-layer split once put most of a
    convolution under the layer before it)."""
    code = {0x100: _parse("ldr.w", "r0, [r1, #4096]", 4), 0x104: _parse("ldr", "r0, [r1], #4", 2)}
    regs = [0] * 16
    regs[1] = 0x1000
    regions = [(0x1000, 0x1100, "conv1"), (0x2000, 0x2100, "fc1")]
    est = estimate("m4", code, [(0x100, regs)], regions)
    assert list(est.layers) == ["fc1"]
    est = estimate("m4", code, [(0x104, regs)], regions)  # post-indexed: reads at the base
    assert list(est.layers) == ["conv1"]
