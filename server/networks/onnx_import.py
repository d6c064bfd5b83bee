"""A float ONNX model read into the integer contract's graph (docs/ARCHITECTURE.md, "Networks
over HTTP"): torch-free, so the HTTP service checks an upload before a job ever sees it.

ONNX is protobuf (no pickle); the model is parsed with `onnx` without its external data (a
model that points at other files is refused), and every node must be one of the contract's
ops, fused the way the integer network runs them:

    Conv (groups, equal strides, symmetric pads, no dilation) -> conv2d
        [-> BatchNormalization] [-> Relu | Clip(0, 6)]   (the conv's norm and activation)
    Gemm, or MatMul [-> Add(bias)] (weights an initializer)  -> linear [-> Relu | Clip(0, 6)]
    Add(x, y) -> Relu | Clip(0, 6)                       -> add (x may be accumulators)
    MaxPool, AveragePool (no padding, floor mode)        -> maxpool2d, avgpool2d
    GlobalAveragePool                                    -> global_avgpool
    Flatten(axis 1), Reshape to (N, -1)                  -> flatten (nothing after a global pool)
    Identity, Dropout                                    -> nothing (the value passes through)

Anything else, or an attribute these do not have, is a `NetworkError` (422) naming the op and
the node. The result is an `ImportedNetwork`: the nodes in the manifest's DAG form (names made
from the ONNX names), float32 weights named as the server's `GraphNet` names its parameters
(`ops.<node>.weight`, `norms.<node>.running_mean`, ...), the input shape and class count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ConfigError
from shared.network import GraphError, check_graph

__all__ = ["NetworkError", "NetworkTooLargeError", "ImportedNetwork", "import_onnx", "ONNX_OPS"]

ONNX_OPS = (
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Add",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Identity",
    "Dropout",
    "Constant",
)
_PASS = ("Identity", "Dropout")


class NetworkError(ConfigError):
    """An uploaded network the integer contract cannot take (422)."""

    code = "bad_network"


class NetworkTooLargeError(NetworkError):
    code = "network_too_large"
    http_status = 413


@dataclass
class ImportedNetwork:
    graph: list[dict[str, Any]]  # DAG form; conv2d nodes say `bias` and `batchnorm_eps`
    weights: dict[str, np.ndarray]  # float32, GraphNet state-dict names
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    onnx_names: dict[str, str] = field(default_factory=dict)  # our node name -> ONNX node's


def import_onnx(path: Path, max_nodes: int) -> ImportedNetwork:
    """Read the ONNX model at `path` (its size is the caller's limit); NetworkError naming
    what is wrong, NetworkTooLargeError past `max_nodes` ONNX nodes."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise NetworkError(f"not an ONNX model (protobuf could not read it: {exc})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise NetworkError("not an ONNX model: it has no graph, or a graph without nodes")
    if len(model.graph.node) > max_nodes:
        raise NetworkTooLargeError(
            f"the model has {len(model.graph.node)} nodes; this server takes at most "
            f"{max_nodes} (SIQ_NETWORK_MAX_NODES)"
        )
    try:
        return _Importer(model).run()
    except NetworkError:
        raise
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
        # a node without the inputs or attributes its op has: a malformed model, not ours
        raise NetworkError(f"a malformed ONNX model ({type(exc).__name__}: {exc})") from None


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.g = model.graph
        self.consts: dict[str, np.ndarray] = {}
        for init in self.g.initializer:
            if init.data_location == 1:  # TensorProto.EXTERNAL
                raise NetworkError(
                    f"initializer {init.name!r} keeps its data in another file; export the "
                    "model with its weights inside it"
                )
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except Exception as exc:  # noqa: BLE001 - a malformed tensor is the model's fault
                raise NetworkError(f"initializer {init.name!r} cannot be read: {exc}") from None
        self.uses: dict[str, int] = {}
        for node in self.g.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for out in self.g.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1
        self.value: dict[str, str] = {}  # ONNX tensor -> our node (or "input")
        self.vector: set[str] = set()  # our nodes whose value is (N, F)
        self.biased: set[str] = set()  # linear nodes whose bias is set
        self.nodes: list[dict[str, Any]] = []
        self.by_name: dict[str, dict[str, Any]] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.onnx_names: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers

    def fail(self, node: Any, message: str) -> NetworkError:
        return NetworkError(f"{node.op_type} node {node.name or '(unnamed)'!r}: {message}")

    def const(self, node: Any, tensor: str, what: str) -> np.ndarray:
        if tensor not in self.consts:
            raise self.fail(
                node,
                f"its {what} ({tensor!r}) must be a constant (an initializer); weights "
                "computed at run time are not supported",
            )
        return self.consts[tensor]

    def src(self, node: Any, tensor: str) -> str:
        if tensor not in self.value:
            raise self.fail(node, f"input {tensor!r} is not a value this importer made")
        return self.value[tensor]

    def new(self, node: Any, op: str, inputs: list[str], **fields: Any) -> dict[str, Any]:
        base = re.sub(r"[^A-Za-z0-9_]+", "_", node.name or "").strip("_") or op
        name, i = base, 1
        while name in self.by_name or name == "input":
            i += 1
            name = f"{base}_{i}"
        entry = {"op": op, "name": name, "inputs": inputs, **fields}
        self.nodes.append(entry)
        self.by_name[name] = entry
        self.onnx_names[name] = node.name
        self.value[node.output[0]] = name
        return entry

    def fusable(self, node: Any, ops: tuple[str, ...], tensor: str | None = None) -> dict[str, Any]:
        """The node that made `node`'s input (`tensor`, default its first), when `node` can
        be fused into it: of one of `ops`, read by `node` alone, without an activation yet."""
        tensor = node.input[0] if tensor is None else tensor
        producer = self.by_name.get(self.value.get(tensor, ""))
        if producer is None or producer["op"] not in ops:
            raise self.fail(
                node, f"must follow one of {', '.join(ops)} (the integer network fuses it there)"
            )
        if self.uses.get(tensor, 0) != 1:
            raise self.fail(node, "its input is read by other nodes too, so it cannot be fused")
        if producer.get("activation", "none") != "none":
            raise self.fail(node, f"{producer['name']} has an activation already")
        return producer

    def window(self, node: Any, a: dict[str, Any]) -> tuple[int, int]:
        kernel = list(a.get("kernel_shape", []))
        strides = list(a.get("strides", [1] * len(kernel)))
        if len(kernel) != 2 or kernel[0] != kernel[1]:
            raise self.fail(node, f"kernel_shape {kernel} must be square and 2-D")
        if len(set(strides)) != 1:
            raise self.fail(node, f"strides {strides} must be equal")
        if set(a.get("dilations", [1])) != {1}:
            raise self.fail(node, "dilations are not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.fail(node, "auto_pad is not supported: give explicit pads")
        return int(kernel[0]), int(strides[0])

    # ------------------------------------------------------------------ the walk

    def run(self) -> ImportedNetwork:
        shape = self.input()
        outputs = list(self.g.output)
        if len(outputs) != 1:
            raise NetworkError(f"the model has {len(outputs)} outputs; it must have one (logits)")
        for node in self.g.node:
            if node.op_type not in ONNX_OPS:
                raise self.fail(
                    node,
                    f"op {node.op_type} is not supported; the integer contract takes "
                    + ", ".join(o for o in ONNX_OPS if o != "Constant"),
                )
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"domain {node.domain!r} is not supported")
            getattr(self, f"op_{node.op_type}")(node, _attrs(node))
        for entry in self.nodes:
            if entry["op"] == "add" and entry["activation"] == "none":
                raise NetworkError(
                    f"Add node {self.onnx_names[entry['name']]!r}: the integer contract's add "
                    "is followed by Relu or Clip(0, 6)"
                )
        out = outputs[0].name
        if self.value.get(out) != (self.nodes[-1]["name"] if self.nodes else None):
            raise NetworkError("the model's output must be its last node's value")
        last = self.nodes[-1]
        if last["op"] != "linear" or last["activation"] != "none":
            raise NetworkError(
                "the model must end in a Gemm / MatMul without an activation (the logits)"
            )
        self.check(shape)
        return ImportedNetwork(
            self.nodes, self.weights, shape, int(last["out_features"]), self.onnx_names
        )

    def input(self) -> tuple[int, int, int]:
        inputs = [i for i in self.g.input if i.name not in self.consts]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise NetworkError(f"the model has {len(inputs)} inputs ({names}); it must have one")
        t = inputs[0].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if t.elem_type != 1 or len(dims) != 4 or any(d < 1 for d in dims[1:]):
            raise NetworkError(
                f"input {inputs[0].name!r} must be float (N, C, H, W) with fixed C, H and W; "
                f"it is {dims} of ONNX type {t.elem_type}"
            )
        if dims[2] != dims[3]:
            raise NetworkError(f"input {inputs[0].name!r}: images are square, got {dims}")
        self.value[inputs[0].name] = "input"
        return dims[1], dims[2], dims[3]

    def check(self, shape: tuple[int, int, int]) -> None:
        """The contract's structural rules (shared.network.check_graph) on the result."""
        graph = []
        for entry in self.nodes:
            e = {k: v for k, v in entry.items() if k not in ("bias", "batchnorm_eps")}
            if e["op"] in ("conv2d", "linear"):
                e["weight_bits"] = 8
            if e.get("activation") == "relu6":
                e["clamp_max"] = 255
            graph.append(e)
        try:
            check_graph(graph, shape, 8)
        except GraphError as exc:
            raise NetworkError(f"the network breaks the integer contract: {exc}") from None

    def weight(self, name: str, key: str, value: np.ndarray) -> None:
        self.weights[f"ops.{name}.{key}"] = np.ascontiguousarray(value, dtype=np.float32)

    # ------------------------------------------------------------------ ops

    def op_Constant(self, node: Any, a: dict[str, Any]) -> None:
        from onnx import numpy_helper

        if "value" not in a:
            raise self.fail(node, "only a tensor `value` is supported")
        self.consts[node.output[0]] = numpy_helper.to_array(a["value"])

    def op_Conv(self, node: Any, a: dict[str, Any]) -> None:
        w = self.const(node, node.input[1], "weight")
        if w.ndim != 4:
            raise self.fail(node, f"weight of shape {w.shape}: a 2-D convolution is 4-D")
        k, stride = self.window(node, {"kernel_shape": list(w.shape[2:]), **a})
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(set(pads)) != 1:
            raise self.fail(node, f"pads {pads} must be symmetric (all equal)")
        groups = int(a.get("group", 1))
        entry = self.new(
            node,
            "conv2d",
            [self.src(node, node.input[0])],
            in_channels=int(w.shape[1]) * groups,
            out_channels=int(w.shape[0]),
            kernel_size=k,
            stride=stride,
            padding=int(pads[0]),
            groups=groups,
            activation="none",
            bias=len(node.input) > 2 and bool(node.input[2]),
        )
        self.weight(entry["name"], "weight", w)
        if entry["bias"]:
            self.weight(entry["name"], "bias", self.const(node, node.input[2], "bias").ravel())

    def op_BatchNormalization(self, node: Any, a: dict[str, Any]) -> None:
        conv = self.fusable(node, ("conv2d",))
        if "batchnorm_eps" in conv:
            raise self.fail(node, f"{conv['name']} has a batch norm already")
        if a.get("training_mode", 0):
            raise self.fail(node, "training_mode is not supported: export in eval mode")
        scale, bias, mean, var = (
            self.const(node, t, what).ravel()
            for t, what in zip(node.input[1:5], ("scale", "B", "mean", "var"), strict=True)
        )
        if len(scale) != conv["out_channels"]:
            raise self.fail(node, f"{len(scale)} channels after {conv['out_channels']}")
        name = conv["name"]
        conv["batchnorm_eps"] = float(a.get("epsilon", 1e-5))
        for key, v in (("weight", scale), ("bias", bias), ("running_mean", mean)):
            self.weights[f"norms.{name}.{key}"] = np.asarray(v, np.float32)
        self.weights[f"norms.{name}.running_var"] = np.asarray(var, np.float32)
        self.value[node.output[0]] = name

    def activate(self, node: Any, activation: str) -> None:
        producer = self.fusable(node, ("conv2d", "linear", "add"))
        producer["activation"] = activation
        self.value[node.output[0]] = producer["name"]

    def op_Relu(self, node: Any, a: dict[str, Any]) -> None:
        self.activate(node, "relu")

    def op_Clip(self, node: Any, a: dict[str, Any]) -> None:
        lo, hi = a.get("min"), a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, node.input[1], "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, node.input[2], "max"))
        if lo != 0 or hi != 6:
            raise self.fail(node, f"only Clip(0, 6) (relu6) is supported, got Clip({lo}, {hi})")
        self.activate(node, "relu6")

    def op_Add(self, node: Any, a: dict[str, Any]) -> None:
        consts = [t for t in node.input if t in self.consts]
        if consts:  # MatMul's bias
            if len(consts) != 1:
                raise self.fail(node, "adds two constants")
            other = next(t for t in node.input if t not in self.consts)
            linear = self.fusable(node, ("linear",), other)
            key = f"ops.{linear['name']}.bias"
            if linear["name"] in self.biased:
                raise self.fail(node, f"{linear['name']} has a bias already")
            self.biased.add(linear["name"])
            bias = self.consts[consts[0]].ravel()
            if len(bias) != linear["out_features"]:
                raise self.fail(node, f"a bias of {len(bias)} for {linear['out_features']} outputs")
            self.weights[key] = np.asarray(bias, np.float32)
            self.value[node.output[0]] = linear["name"]
            return
        x, y = (self.src(node, t) for t in node.input)
        if self._accumulators(y):
            if self._accumulators(x):
                raise self.fail(
                    node,
                    "both inputs are a convolution or linear layer without an activation; the "
                    "integer contract's add takes such accumulators as one input only (give "
                    "the other branch a Relu)",
                )
            x, y = y, x
        self.new(node, "add", [x, y], activation="none")

    def _accumulators(self, name: str) -> bool:
        entry = self.by_name.get(name)
        return (
            entry is not None
            and entry["op"] in ("conv2d", "linear")
            and (entry["activation"] == "none")
        )

    def pool(self, node: Any, a: dict[str, Any], op: str) -> None:
        k, stride = self.window(node, a)
        if set(a.get("pads", [0])) != {0} or a.get("ceil_mode", 0):
            raise self.fail(node, "pools must have no padding and floor mode (ceil_mode 0)")
        self.new(node, op, [self.src(node, node.input[0])], kernel_size=k, stride=stride)

    def op_MaxPool(self, node: Any, a: dict[str, Any]) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "the Indices output is not supported")
        self.pool(node, a, "maxpool2d")

    def op_AveragePool(self, node: Any, a: dict[str, Any]) -> None:
        self.pool(node, a, "avgpool2d")

    def op_GlobalAveragePool(self, node: Any, a: dict[str, Any]) -> None:
        entry = self.new(node, "global_avgpool", [self.src(node, node.input[0])])
        self.vector.add(entry["name"])

    def flatten(self, node: Any) -> None:
        src = self.src(node, node.input[0])
        if src in self.vector:  # (N, C, 1, 1) after a global pool: already (N, C) here
            self.value[node.output[0]] = src
            return
        entry = self.new(node, "flatten", [src])
        self.vector.add(entry["name"])

    def op_Flatten(self, node: Any, a: dict[str, Any]) -> None:
        if int(a.get("axis", 1)) != 1:
            raise self.fail(node, "only Flatten(axis=1) is supported")
        self.flatten(node)

    def op_Reshape(self, node: Any, a: dict[str, Any]) -> None:
        shape = [int(v) for v in self.const(node, node.input[1], "shape").ravel()]
        if len(shape) != 2 or shape[0] not in (0, -1, 1) or shape[1] == 0:
            raise self.fail(node, f"only a reshape to (N, -1) is supported, got {shape}")
        self.flatten(node)

    def linear(self, node: Any, w: np.ndarray, bias: np.ndarray | None) -> None:
        src = self.src(node, node.input[0])
        entry = self.new(
            node,
            "linear",
            [src],
            in_features=int(w.shape[1]),
            out_features=int(w.shape[0]),
            activation="none",
        )
        self.weight(entry["name"], "weight", w)
        if bias is not None:
            if bias.size not in (1, w.shape[0]):
                raise self.fail(node, f"a bias of {bias.size} for {w.shape[0]} outputs")
            self.weight(entry["name"], "bias", np.broadcast_to(bias.ravel(), (w.shape[0],)))
            self.biased.add(entry["name"])
        else:
            self.weight(entry["name"], "bias", np.zeros(w.shape[0], np.float32))

    def op_Gemm(self, node: Any, a: dict[str, Any]) -> None:
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1 or float(a.get("beta", 1.0)) != 1:
            raise self.fail(node, "only transA 0, alpha 1 and beta 1 are supported")
        w = self.const(node, node.input[1], "weight")
        if w.ndim != 2:
            raise self.fail(node, f"weight of shape {w.shape}: 2-D expected")
        w = w if a.get("transB", 0) else w.T
        bias = self.const(node, node.input[2], "bias") if len(node.input) > 2 else None
        self.linear(node, w, bias)

    def op_MatMul(self, node: Any, a: dict[str, Any]) -> None:
        w = self.const(node, node.input[1], "weight")
        if w.ndim != 2:
            raise self.fail(node, f"weight of shape {w.shape}: 2-D expected")
        self.linear(node, w.T, None)  # a zero bias, until an Add gives one

    def op_Identity(self, node: Any, a: dict[str, Any]) -> None:
        if node.input[0] in self.consts:  # the exporter's copy of a shared weight
            self.consts[node.output[0]] = self.consts[node.input[0]]
            return
        self.value[node.output[0]] = self.src(node, node.input[0])

    def op_Dropout(self, node: Any, a: dict[str, Any]) -> None:
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise self.fail(node, "its mask output is read; only inference Dropout is supported")
        self.op_Identity(node, a)
