"""The graph contract of a bundle, stated once (docs/ARCHITECTURE.md, "The integer network,
precisely"): the ops and their fields, the DAG form every consumer reads (`as_dag`), how many
windows a convolution or pool has, the shape and kind (codes or accumulators) of every node's
value, the checks a graph must pass (`check_graph`), codebook sizes and the rounding rule.
shared.bundle validates with it, shared.engine plans with it, and the server's models,
quantised forward pass and export build with it.

A graph is a list of nodes in topological order, each a dict with `op`, `name`, `inputs`
(names of earlier nodes, or "input": the quantised image) and the op's fields. Version 1 and
2 bundles store a chain without `inputs` and with a `relu` flag per weighted layer;
`as_dag` turns it into this form. Shapes are per image: (C, H, W) for feature maps,
(features,) after a flatten, a global average pool or a linear layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "INPUT",
    "WEIGHTED_OPS",
    "CHAIN_OPS",
    "KNOWN_OPS",
    "ACTIVATIONS",
    "CODES",
    "ACCUMULATORS",
    "GraphError",
    "Value",
    "as_dag",
    "as_chain",
    "activation",
    "groups",
    "requantises",
    "clamp_top",
    "check_graph",
    "round_half_up",
    "windows",
    "output_shape",
    "weight_shape",
    "carries_relu",
    "is_relu_chain",
    "codebook_size",
    "bits_of_codebook",
]

INPUT = "input"  # the name by which a node takes the quantised image
WEIGHTED_OPS = ("conv2d", "linear")
CHAIN_OPS = ("conv2d", "linear", "maxpool2d", "flatten")  # all that versions 1 and 2 know
KNOWN_OPS = (*CHAIN_OPS, "add", "avgpool2d", "global_avgpool")
ACTIVATIONS = ("relu", "relu6", "none")  # of a weighted node; an add's is relu or relu6
CODES = "codes"  # unsigned a-bit integers with a real scale
ACCUMULATORS = "accumulators"  # int32 sums of a weighted node without requantisation
_NAME = re.compile(r"[A-Za-z0-9_.]+")
_ARITY = {"add": 2}  # every other op takes one input


class GraphError(ValueError):
    """A graph breaks the contract; the message says which node and how. (A bundle reader
    turns it into BundleError.)"""


@dataclass(frozen=True)
class Value:
    """What a node produces, per image: its shape and whether it is codes or accumulators."""

    shape: tuple[int, ...]
    kind: str


def as_dag(graph: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The graph in DAG form. A version 1 or 2 chain (nodes without `inputs`) becomes: each
    node's inputs = [the previous node] ("input" for the first), `relu: true` -> `activation:
    "relu"`, `relu: false` -> "none". Nodes that have `inputs` are kept as they are, so the
    DAG form of a DAG is itself. Returns new dicts; the graph given is not changed."""
    out: list[dict[str, Any]] = []
    previous = INPUT
    for node in graph:
        if "inputs" in node:
            out.append(dict(node))
        else:
            new = {k: v for k, v in node.items() if k != "relu"}
            new["inputs"] = [previous]
            if node.get("op") in WEIGHTED_OPS:
                new["activation"] = "relu" if node.get("relu") else "none"
            out.append(new)
        previous = node.get("name", previous)
    return out


def as_chain(graph: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The graph in version-1 chain form (no `inputs`, a `relu` flag per weighted layer) when
    it is one: every node takes the one before it, only chain ops, no groups, activations
    relu or none; else None. Lets the implementations that have a fast chain path keep it
    for any format version."""
    chain: list[dict[str, Any]] = []
    previous = INPUT
    for node in as_dag(graph):
        if (
            node["op"] not in CHAIN_OPS
            or node["inputs"] != [previous]
            or groups(node) != 1
            or (node["op"] in WEIGHTED_OPS and activation(node) not in ("relu", "none"))
        ):
            return None
        link = {k: v for k, v in node.items() if k not in ("inputs", "activation", "groups")}
        if node["op"] in WEIGHTED_OPS:
            link["relu"] = activation(node) == "relu"
        chain.append(link)
        previous = node["name"]
    return chain


def activation(node: dict[str, Any]) -> str:
    """A weighted or add node's activation in DAG form ("relu", "relu6" or "none")."""
    return node["activation"] if "activation" in node else ("relu" if node.get("relu") else "none")


def groups(node: dict[str, Any]) -> int:
    """A convolution's groups (absent = 1)."""
    return int(node.get("groups", 1))


def requantises(node: dict[str, Any]) -> bool:
    """Whether a node turns sums into codes with a multiplier and a shift (tensors
    `name.multiplier`, `name.shift`): an add always, a weighted node unless its activation
    is "none"."""
    return node["op"] == "add" or (node["op"] in WEIGHTED_OPS and activation(node) != "none")


def clamp_top(node: dict[str, Any], bits: int) -> int:
    """The upper clip of a requantising node: `clamp_max` for relu6, else A = 2^bits - 1."""
    return int(node["clamp_max"]) if activation(node) == "relu6" else (1 << bits) - 1


def round_half_up(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """floor(x + 0.5) in float64: the one rounding rule of SIQ (ties go up, also for
    negatives); into `out` (float64, may be x itself) when given. (The server's quantised
    forward pass applies the same formula to torch tensors, where autograd needs it.)"""
    y = np.add(x, 0.5, out=out, dtype=np.float64)
    return np.floor(y, out=y)


def windows(size: int, kernel: int, stride: int) -> int:
    """How many kernel-wide windows at this stride fit in `size` (floor mode: a partial
    window at the end is dropped, as torch's default `ceil_mode=False`). Padding is added
    to `size` by the caller."""
    return (size - kernel) // stride + 1


def output_shape(layer: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    """A graph node's output shape per image, from its (first) input's: (C, H, W), or
    (features,)."""
    op = layer["op"]
    if op == "flatten":
        return (math.prod(shape),)
    if op == "linear":
        return (layer["out_features"],)
    if op == "add":
        return tuple(shape)
    if op == "global_avgpool":
        return (shape[0],)
    c, h, w = shape
    k, s = layer["kernel_size"], layer["stride"]
    p = layer.get("padding", 0)  # pools have none
    ho, wo = windows(h + 2 * p, k, s), windows(w + 2 * p, k, s)
    return (layer["out_channels"] if op == "conv2d" else c, ho, wo)


def weight_shape(layer: dict[str, Any]) -> tuple[int, ...]:
    """Shape of a weighted layer's weight tensor, as torch lays it out: (O, I/groups, k, k)
    or (O, I)."""
    if layer["op"] == "conv2d":
        k = layer["kernel_size"]
        return (layer["out_channels"], layer["in_channels"] // groups(layer), k, k)
    return (layer["out_features"], layer["in_features"])


def carries_relu(index: int, weighted_count: int) -> bool:
    """The ReLU-chain rule of version 1 and 2 graphs: every weighted layer but the last is
    followed by a ReLU (fused into its requantisation); the last one's accumulators are the
    logits. `index` counts weighted layers only."""
    return index < weighted_count - 1


def is_relu_chain(relu: Sequence[bool]) -> bool:
    """Whether the weighted layers' `relu` flags, in order, follow the rule."""
    return len(relu) > 0 and all(r is carries_relu(i, len(relu)) for i, r in enumerate(relu))


def codebook_size(bits: int) -> int:
    """A `bits`-bit layer's codebook has exactly 2^bits entries (unused ones included)."""
    return 1 << bits


def bits_of_codebook(length: int) -> int:
    """The weight bits a codebook of `length` entries stands for; ValueError unless a power
    of two."""
    bits = int(length).bit_length() - 1
    if length < 2 or codebook_size(bits) != length:
        raise ValueError(f"a codebook must have 2^b >= 2 entries, got {length}")
    return bits


# --- checking a graph ---------------------------------------------------------------------


def check_graph(graph: Any, input_shape: tuple[int, ...], activation_bits: int) -> dict[str, Value]:
    """Check a DAG-form graph (after `as_dag`) against the contract's structural rules and
    return every value by name ("input" first, then each node, in order). Raises GraphError
    for: a node that is not an object, an unknown op, a bad, duplicate or reserved name,
    inputs that name the node itself, a later node or nothing, the wrong number of inputs,
    fields out of range, shape mismatches (channels, features, groups, add shapes, windows
    that do not fit), accumulators consumed by anything but an add's first input, an output
    that is not accumulators, a node whose value nothing uses. Tensors (codebooks, the
    accumulator bound, multipliers and shifts) are the bundle reader's to check."""
    if not isinstance(graph, list) or not graph:
        raise GraphError("the graph must be a non-empty list of nodes")
    top = (1 << activation_bits) - 1
    values: dict[str, Value] = {INPUT: Value(tuple(input_shape), CODES)}
    names = [n.get("name") for n in graph if isinstance(n, dict)]
    used: set[str] = set()
    for i, node in enumerate(graph):
        if not isinstance(node, dict):
            raise GraphError(f"graph[{i}] is not an object")
        op, name = node.get("op"), node.get("name")
        if op not in KNOWN_OPS:
            raise GraphError(f"graph[{i}]: unknown op {op!r} (known: {', '.join(KNOWN_OPS)})")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in values:
            raise GraphError(
                f"graph[{i}]: bad, duplicate or reserved name {name!r} (names are unique, "
                f"of letters, digits, '_' and '.', and not {INPUT!r})"
            )
        where = f"node {name}"
        inputs = _inputs(node, name, names, values, where)
        used.update(inputs)
        args = [values[x] for x in inputs]
        for j, value in enumerate(args):
            if value.kind == ACCUMULATORS and not (op == "add" and j == 0):
                raise GraphError(
                    f"{where}: input {inputs[j]!r} is accumulators, which only the output or "
                    "an add's first input may be"
                )
        values[name] = Value(_check_node(node, op, args, top, where), _kind(node, op))
    output = graph[-1]["name"]
    if values[output].kind != ACCUMULATORS:
        raise GraphError(
            f"the output node {output} must give accumulators (a weighted node with activation "
            "'none'), not codes"
        )
    unused = [n for n in values if n not in used and n != output]
    if unused:
        raise GraphError(f"nothing uses the value of {', '.join(unused)}")
    return values


def _inputs(
    node: dict[str, Any], name: str, names: list[Any], values: dict[str, Value], where: str
) -> list[str]:
    inputs = node.get("inputs")
    arity = _ARITY.get(node["op"], 1)
    if not isinstance(inputs, list) or len(inputs) != arity:
        raise GraphError(f"{where}: 'inputs' must be a list of {arity} name(s), got {inputs!r}")
    for x in inputs:
        if x == name:
            raise GraphError(f"{where}: takes its own value as input")
        if not isinstance(x, str) or x not in values:
            later = x in names
            raise GraphError(
                f"{where}: input {x!r} " + ("is a later node" if later else "names no node")
            )
    return inputs


def _kind(node: dict[str, Any], op: str) -> str:
    if op in WEIGHTED_OPS and node.get("activation") == "none":
        return ACCUMULATORS
    return CODES


def _int(node: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = node.get(key)
    if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        raise GraphError(f"{where}: '{key}' must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _activation(node: dict[str, Any], allowed: tuple[str, ...], top: int, where: str) -> None:
    act = node.get("activation")
    if act not in allowed:
        raise GraphError(f"{where}: 'activation' must be one of {', '.join(allowed)}, not {act!r}")
    if act == "relu6":
        _int(node, "clamp_max", 1, top, where)


def _map(args: list[Value], where: str, op: str) -> tuple[int, ...]:
    shape = args[0].shape
    if len(shape) != 3:
        raise GraphError(f"{where}: {op} needs a (C, H, W) input, got {shape}")
    return shape


def _check_node(
    node: dict[str, Any], op: str, args: list[Value], top: int, where: str
) -> tuple[int, ...]:
    """The node's output shape, after checking its fields against its inputs."""
    if op == "flatten":
        return output_shape(node, args[0].shape)
    if op == "add":
        _activation(node, ("relu", "relu6"), top, where)
        if args[0].shape != args[1].shape:
            raise GraphError(f"{where}: adds shapes {args[0].shape} and {args[1].shape}")
        return args[0].shape
    if op == "global_avgpool":
        return output_shape(node, _map(args, where, op))
    if op in ("maxpool2d", "avgpool2d"):
        c, h, w = _map(args, where, op)
        k = _int(node, "kernel_size", 1, 64, where)
        _int(node, "stride", 1, 64, where)
        if h < k or w < k:
            raise GraphError(f"{where}: a {k}x{k} window does not fit in {h}x{w}")
        return output_shape(node, (c, h, w))
    _int(node, "weight_bits", 1, 8, where)
    _activation(node, ACTIVATIONS, top, where)
    if op == "linear":
        shape = args[0].shape
        if len(shape) != 1:
            raise GraphError(f"{where}: linear needs a flat input (add a flatten), got {shape}")
        fin = _int(node, "in_features", 1, 1 << 24, where)
        _int(node, "out_features", 1, 1 << 16, where)
        if fin != shape[0]:
            raise GraphError(f"{where}: in_features {fin} != incoming {shape[0]}")
        return output_shape(node, shape)
    c, h, w = _map(args, where, op)
    cin = _int(node, "in_channels", 1, 1 << 16, where)
    cout = _int(node, "out_channels", 1, 1 << 16, where)
    k = _int(node, "kernel_size", 1, 64, where)
    _int(node, "stride", 1, 64, where)
    p = _int(node, "padding", 0, 64, where)
    g = _int(node, "groups", 1, 1 << 16, where) if "groups" in node else 1
    if cin != c:
        raise GraphError(f"{where}: in_channels {cin} != incoming {c}")
    if cin % g or cout % g:
        raise GraphError(
            f"{where}: groups {g} must divide in_channels {cin} and out_channels {cout}"
        )
    if h + 2 * p < k or w + 2 * p < k:
        raise GraphError(f"{where}: a {k}x{k} kernel does not fit in {h}x{w} padded by {p}")
    return output_shape(node, (c, h, w))
