"""A bundle as an ONNX graph whose integer logits equal shared.engine's, bit for bit.

Carriers for the multiply-adds (docs/ARCHITECTURE.md, "Exactness"):

- `carrier="int"` (the export): ConvInteger / MatMulInteger on uint8 codes with int32
  accumulators, exact by the ONNX spec in any runtime. Weights go as int8, or as uint8 w + 128
  with zero point 128 where int8 pairs could saturate a uint8 x int8 kernel (`layers._accumulate`).
  Needs codebook values in int8 (codebook_bits <= 8).
- `carrier="float"`: Conv / MatMul / Gemm in float32, exact where a layer's accumulator
  bound is < 2^24, because then every partial sum is an integer float32 holds exactly, in
  any summation order (the numpy engine's BLAS argument). Layers over the bound use the
  integer ops.
- `carrier="fast"` (what the client's engine runs): float32 convolutions and small linear
  layers, MatMulInteger for large linear layers: in ONNX Runtime each the faster exact form
  (`layers._floats`, its timings in bench/results/tuning_notes.md; ConvInteger is slower than
  its float Conv there).

Requantisation is the proved float form: `clip(floor(acc * scale + offset), 0, A)` as plain
Mul, Add, Floor, Clip with constants from `shared.network.quant.fit_affine_requant` (float32, else
float64); a layer without such constants gets the int64 formula, `(acc + bias) * multiplier
+ 2^(shift-1)`, floored by `2^shift` (an int64 Div after Max(., 0): for the non-negative
values that survive the clip, truncating division is the floor). A max-pool after a layer
whose requantisation runs in float32 is applied to the accumulators, as the engine does.

The graph is walked in DAG form (`shared.network.graph.as_dag`; a version 1 or 2 chain is
the DAG whose nodes each read the one before, and exports as it always did), one ONNX value
per node: adds in int64 with the contract's formula, average pools as integer sums divided
with its rounding, relu6 as every requantisation form clipped at `clamp_max`, accumulators
(activation "none") as the logits or an add's first input (`layers`). A max-pool goes into
the requantisation before it only where it is that node's one reader.

Runtimes must not rewrite this arithmetic: ONNX Runtime's fusions that fold a Mul or Add
into a Conv/MatMul's weights (`UNSAFE_FUSIONS`) would; `shared.engine.onnx_engine` turns them off
and the tests check which ops its optimised graph keeps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shared.bundle import Bundle
from shared.network.graph import INPUT, WEIGHTED_OPS, as_dag, check_graph, requantises
from shared.onnx import proto as pb
from shared.onnx.graph import GraphBuilder, Value, maxpool
from shared.onnx.layers import (
    Carrier,
    ExportError,
    accumulators,
    add,
    avgpool,
    global_avgpool,
    quantize_images,
    takes_uint8,
    weighted,
)

__all__ = ["OPSET", "UNSAFE_FUSIONS", "ExportError", "to_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR of opset 17
# ONNX Runtime graph transformers that would change the float arithmetic of a float-carrier
# graph: they fold the requantisation's Mul / Add into a Conv's weights and bias or a MatMul's
# alpha. (MatMulAddFusion stays on: it turns the last layer's MatMul + integer bias into a
# Gemm, whose partial sums stay integers under the same bound.)
UNSAFE_FUSIONS = ["ConvMulFusion", "ConvAddFusion", "MatMulScaleFusion"]


def to_onnx(
    bundle: Bundle,
    *,
    carrier: Carrier = "int",
    inputs: str = "codes",
    logits_dtype: Any = np.int32,
) -> bytes:
    """The bundle's network as ONNX ModelProto bytes (opset 17).

    Input `codes` (uint8, N x C x H x W: the a-bit input codes, `IntegerNetwork.quantize_input`)
    or, with `inputs="images"`, `images` (float32 in [0, 1], quantised in the graph with
    `quantize_input`'s own float64 ops). Output `logits`: int32 (N, classes), equal to
    `IntegerNetwork.forward_int`. `logits_dtype=None` leaves the logits in the last layer's
    accumulator type (float32 from a float32 layer: exact integers), sparing a Cast.
    A chain (format versions 1, 2) or a DAG (version 3). ExportError when the network cannot
    be expressed in the carrier.
    """
    if carrier not in ("int", "float", "fast") or inputs not in ("codes", "images"):
        raise ValueError("carrier must be int, float or fast; inputs codes or images")
    m = bundle.manifest
    bits = int(m["activation_bits"])
    c, h, w = m["input"]["channels"], m["input"]["height"], m["input"]["width"]
    graph = as_dag(m["graph"])
    shapes = {k: v.shape for k, v in check_graph(graph, (c, h, w), bits).items()}
    consumers: dict[str, list[dict[str, Any]]] = {n["name"]: [] for n in graph}
    for node in graph:
        for source in node["inputs"]:
            if source != INPUT:
                consumers[source].append(node)
    g = GraphBuilder()
    if inputs == "images":
        x = quantize_images(g, "images", float(m["input"]["scale"]), bits)
    else:
        x = Value("codes", np.dtype(np.uint8))
    values = {INPUT: x}
    fused: set[str] = set()  # max-pools that went into the node before them
    output = graph[-1]["name"]
    for node in graph:
        name, op = node["name"], node["op"]
        if name in fused:
            continue
        args = [values[source] for source in node["inputs"]]
        if op == "flatten":
            flat = g.op("Flatten", [args[0].name], "flatten", axis=1)
            values[name] = Value(flat, args[0].dtype, args[0].floor_pending)
        elif op == "maxpool2d":
            values[name] = maxpool(g, args[0], node)
        elif op == "avgpool2d":
            values[name] = avgpool(g, node, args[0], shapes[name][0], carrier, bits)
        elif op == "global_avgpool":
            positions = math.prod(shapes[node["inputs"][0]][1:])
            values[name] = global_avgpool(g, node, args[0], positions, bits)
        elif op == "add":
            values[name] = add(g, bundle, node, args[0], args[1])
        elif not requantises(node):
            out = "logits" if name == output else None
            dtype = logits_dtype if name == output else None
            values[name] = accumulators(g, bundle, node, args[0], carrier, dtype, out)
        else:
            after = consumers[name]
            pool = after[0] if len(after) == 1 and after[0]["op"] == "maxpool2d" else None
            if pool is not None:  # the pool goes into the node (before a float requantisation)
                fused.add(pool["name"])
                name, after = pool["name"], consumers[pool["name"]]
            readers = _readers(after, consumers)
            uint8_next = bool(readers) and all(  # the readers take the codes as uint8
                takes_uint8(g, bundle, nxt, carrier, bits) for nxt in readers
            )
            values[name] = weighted(g, bundle, node, args[0], bits, carrier, pool, uint8_next)
    logits = values[output].dtype
    proto = pb.graph(
        "siq",
        g.nodes,
        g.initializers,
        [pb.value_info(inputs, np.float32 if inputs == "images" else np.uint8, ["N", c, h, w])],
        [pb.value_info("logits", logits, ["N", len(m["input"]["class_names"])])],
    )
    return pb.model(
        proto,
        opset=OPSET,
        ir_version=IR_VERSION,
        producer="siq",
        doc=f"SIQ bundle {bundle.id}: integer logits of its network ({carrier} carrier)",
        metadata={
            "siq_bundle_id": bundle.id,
            "siq_class_names": ",".join(m["input"]["class_names"]),
            "siq_logit_scale": repr(float(m["logit_scale"])),
            "siq_input_scale": repr(float(m["input"]["scale"])),
        },
    )


def _readers(
    nodes: list[dict[str, Any]], consumers: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The nodes that read a value's codes, looking through max-pools and flattens (which
    pass codes on as they are); empty when any reader is not a weighted node."""
    readers = []
    for node in nodes:
        if node["op"] in ("maxpool2d", "flatten"):
            further = _readers(consumers[node["name"]], consumers)
            if not further:
                return []
            readers += further
        elif node["op"] in WEIGHTED_OPS:
            readers.append(node)
        else:
            return []
    return readers
