"""Builders of valid random bundles for tests that need a network but no training."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.bundle import DAG_VERSION, Bundle, decode_bundle, encode_bundle
from shared.bundle.bitpack import pack_codes
from shared.engine.reference import run_node
from shared.network import (
    INPUT,
    quantize_add_multipliers,
    quantize_multiplier,
    weight_shape,
    windows,
)

ARCHS: dict[str, dict[str, Any]] = {
    # LeNet-shaped, 1x28x28 digits
    "lenet": {
        "input": (1, 28, 28),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 8,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 2, "stride": 2},
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 16,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool2", "kernel_size": 2, "stride": 2},
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 32},
            {"op": "linear", "name": "fc2", "out_features": 10},
        ],
        "preprocess": {"kind": "digit"},
    },
    # grayscale with a padded, strided first convolution and a pool that follows no layer
    "gray_strided": {
        "input": (1, 17, 17),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 4,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 6,
                "kernel_size": 3,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 2, "stride": 2},
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 3},
        ],
        "preprocess": {"kind": "digit"},
    },
    # small RGB net with padding, stride and an overlapping pool
    "photo": {
        "input": (3, 16, 16),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 6,
                "kernel_size": 3,
                "stride": 1,
                "padding": 1,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 3, "stride": 2},
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 8,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 5},
        ],
        "preprocess": {"kind": "photo", "resize": 18, "crop": 16},
    },
}


def make_random_network(
    seed: int = 0,
    *,
    arch: str = "lenet",
    weight_bits: int = 4,
    activation_bits: int = 4,
    codebook_bits: int = 8,
    per_channel: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A random but well-scaled integer network: (manifest, tensors) ready for encode_bundle."""
    rng = np.random.default_rng(seed)
    spec = ARCHS[arch]
    top = (1 << activation_bits) - 1
    limit = (1 << (codebook_bits - 1)) - 1
    shape: tuple[int, ...] = spec["input"]
    graph: list[dict[str, Any]] = []
    tensors: dict[str, np.ndarray] = {}
    weighted = [g["name"] for g in spec["graph"] if g["op"] in ("conv2d", "linear")]
    for template in spec["graph"]:
        layer = dict(template)
        op = layer["op"]
        if op == "flatten":
            shape = (int(np.prod(shape)),)
        elif op == "maxpool2d":
            k, s = layer["kernel_size"], layer["stride"]
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        else:
            layer["weight_bits"] = weight_bits
            layer["relu"] = layer["name"] != weighted[-1]
            if op == "conv2d":
                layer["in_channels"] = shape[0]
                k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
                out = layer["out_channels"]
                shape = (out, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
            else:
                layer["in_features"] = shape[0]
                out = layer["out_features"]
                shape = (out,)
            name = layer["name"]
            count = int(np.prod(weight_shape(layer)))
            fan_in = count // out
            codebook = np.sort(rng.integers(-limit, limit + 1, size=1 << weight_bits)).astype(
                np.int32
            )
            codes = rng.integers(0, 1 << weight_bits, size=count)
            tensors[f"{name}.codes"] = pack_codes(codes, weight_bits)
            tensors[f"{name}.codebook"] = codebook
            # typical |acc| ~ sqrt(fan_in) * rms(w) * rms(x); put the ReLU's range around it
            spread = np.sqrt(fan_in * np.mean(codebook.astype(np.float64) ** 2)) * top / 2
            tensors[f"{name}.bias"] = rng.integers(
                -int(spread / 4), int(spread / 4) + 1, size=out
            ).astype(np.int32)
            if layer["relu"]:
                reals = (
                    top
                    / (2 * spread)
                    * (rng.uniform(0.5, 2.0, size=out) if per_channel else np.ones(1))
                )
                pairs = [quantize_multiplier(float(r)) for r in reals]
                tensors[f"{name}.multiplier"] = np.array([m for m, _ in pairs], dtype=np.int32)
                tensors[f"{name}.shift"] = np.array([s for _, s in pairs], dtype=np.int32)
        graph.append(layer)
    channels, height, width = spec["input"]
    manifest = {
        "format": "siq-bundle",
        "format_version": 1,
        "graph": graph,
        "input": {
            "channels": channels,
            "height": height,
            "width": width,
            "bits": activation_bits,
            "scale": 1.0 / top,
            "preprocess": spec["preprocess"],
            "class_names": [f"class{i}" for i in range(shape[0])],
        },
        "weight_bits": weight_bits,
        "activation_bits": activation_bits,
        "codebook_bits": codebook_bits,
        "logit_scale": 0.01,
        "layers": {},
        "metrics": {},
        "provenance": {"dataset": f"random-{arch}", "job_id": None, "seed": seed},
    }
    return manifest, tensors


def make_random_bundle(seed: int = 0, **kwargs: Any) -> bytes:
    """Bundle bytes of `make_random_network(seed, **kwargs)`."""
    return encode_bundle(*make_random_network(seed, **kwargs))


# --- DAG graphs (format version 3) --------------------------------------------------------


class GraphBuilder:
    """Hand-made version-3 graphs. Each method adds a node and returns its name, to pass as
    an input to later ones ("input" is the image's codes). Weights, biases, multipliers and
    shifts may be given (integers, for hand-computed cases) or are drawn from `rng`, scaled
    so that values spread over the code range (not all 0 or all A).

    >>> b = GraphBuilder(0, (1, 5, 5))
    >>> x = b.conv("input", 2, 3, padding=1)
    >>> bundle = b.bundle(b.linear(b.global_avgpool(x), 3, activation="none"))
    """

    def __init__(
        self,
        rng: np.random.Generator | int,
        input_shape: tuple[int, int, int],
        *,
        activation_bits: int = 4,
        weight_bits: int = 4,
        codebook_bits: int = 8,
    ) -> None:
        self.rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
        self.input_shape = tuple(input_shape)
        self.bits, self.weight_bits, self.codebook_bits = (
            activation_bits,
            weight_bits,
            codebook_bits,
        )
        self.top = (1 << activation_bits) - 1
        self.nodes: list[dict[str, Any]] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {INPUT: self.input_shape}
        # every node's value on a few random images: the scales are chosen from them so that
        # values spread over the code range (not all 0, not all A)
        self.calib = {INPUT: self.rng.integers(0, self.top + 1, size=(8, *self.input_shape))}
        self.accumulators: set[str] = set()

    # --- nodes ----------------------------------------------------------------------------

    def conv(
        self,
        x: str,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        activation: str = "relu",
        clamp_max: int | None = None,
        weights: Any = None,
        bias: Any = None,
        multiplier: Any = None,
        shift: Any = None,
        gain: float = 1.0,
        name: str | None = None,
    ) -> str:
        fields: dict[str, Any] = {
            "in_channels": self.shapes[x][0],
            "out_channels": out_channels,
            "kernel_size": kernel_size,
            "stride": stride,
            "padding": padding,
        }
        if groups != 1:
            fields["groups"] = groups
        return self._weighted(
            "conv2d", x, fields, activation, clamp_max, weights, bias, multiplier, shift, gain, name
        )

    def depthwise(self, x: str, kernel_size: int = 3, **kwargs: Any) -> str:
        """A depthwise convolution: groups == in == out channels."""
        c = self.shapes[x][0]
        return self.conv(x, c, kernel_size, groups=c, **kwargs)

    def linear(
        self,
        x: str,
        out_features: int,
        *,
        activation: str = "relu",
        clamp_max: int | None = None,
        weights: Any = None,
        bias: Any = None,
        multiplier: Any = None,
        shift: Any = None,
        gain: float = 1.0,
        name: str | None = None,
    ) -> str:
        fields = {"in_features": self.shapes[x][0], "out_features": out_features}
        return self._weighted(
            "linear", x, fields, activation, clamp_max, weights, bias, multiplier, shift, gain, name
        )

    def add(
        self,
        x: str,
        y: str,
        *,
        activation: str = "relu",
        clamp_max: int | None = None,
        multiplier: Any = None,
        shift: int | None = None,
        gain: float = 1.0,
        name: str | None = None,
    ) -> str:
        """`x` codes or accumulators, `y` codes. Without constants, both come to about half
        their range times `gain` (a large gain saturates the sum at its top)."""
        name = name or self._name("add")
        node: dict[str, Any] = {"op": "add", "name": name, "inputs": [x, y]}
        node.update(self._activation(activation, clamp_max))
        if multiplier is None:
            ratio_x = gain * (self._unit(self.calib[x]) if x in self.accumulators else 0.5)
            m, s = quantize_add_multipliers(ratio_x, 0.5 * gain)
        else:
            m, s = np.asarray(multiplier), np.asarray([shift])
        self.tensors[f"{name}.multiplier"] = np.asarray(m, dtype=np.int32)
        self.tensors[f"{name}.shift"] = np.asarray(s, dtype=np.int32)
        return self._append(node, self.shapes[x])

    def maxpool(
        self, x: str, kernel_size: int = 2, stride: int | None = None, name: str | None = None
    ) -> str:
        return self._pool("maxpool2d", x, kernel_size, stride, name)

    def avgpool(
        self, x: str, kernel_size: int = 2, stride: int | None = None, name: str | None = None
    ) -> str:
        return self._pool("avgpool2d", x, kernel_size, stride, name)

    def global_avgpool(self, x: str, name: str | None = None) -> str:
        node = {"op": "global_avgpool", "name": name or self._name("gap"), "inputs": [x]}
        return self._append(node, (self.shapes[x][0],))

    def flatten(self, x: str, name: str | None = None) -> str:
        node = {"op": "flatten", "name": name or self._name("flatten"), "inputs": [x]}
        return self._append(node, (int(np.prod(self.shapes[x])),))

    # --- the result -----------------------------------------------------------------------

    def network(self, output: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(manifest, tensors) of the graph so far, ready for encode_bundle; `output`, if
        given, must be the last node. One class per output value."""
        assert output is None or output == self.nodes[-1]["name"], "the output is the last node"
        classes = self.shapes[self.nodes[-1]["name"]][0]
        c, h, w = self.input_shape
        manifest = {
            "format": "siq-bundle",
            "format_version": DAG_VERSION,
            "graph": [dict(n) for n in self.nodes],
            "input": {
                "channels": c,
                "height": h,
                "width": w,
                "bits": self.bits,
                "scale": 1.0 / self.top,
                "preprocess": {"kind": "photo", "resize": max(h, w), "crop": min(h, w)}
                if c == 3
                else {"kind": "digit"},
                "class_names": [f"class{i}" for i in range(classes)],
            },
            "weight_bits": self.weight_bits,
            "activation_bits": self.bits,
            "codebook_bits": self.codebook_bits,
            "logit_scale": 0.01,
            "layers": {},
            "metrics": {},
            "provenance": {"dataset": "random-dag", "job_id": None, "seed": None},
        }
        return manifest, dict(self.tensors)

    def bundle(self, output: str | None = None) -> Bundle:
        """The graph as a decoded (so validated) bundle."""
        return decode_bundle(encode_bundle(*self.network(output)))

    # --- helpers --------------------------------------------------------------------------

    def _name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes) + 1}"

    def _append(self, node: dict[str, Any], shape: tuple[int, ...]) -> str:
        self.nodes.append(node)
        name = node["name"]
        inputs = [self.calib[x] for x in node["inputs"]]
        self.shapes[name], self.calib[name] = (
            tuple(shape),
            run_node(node, inputs, self.tensors, self.bits),
        )
        return name

    def _unit(self, acc: np.ndarray) -> float:
        """The factor that brings one standard deviation of accumulators to a quarter of the
        code range."""
        return self.top / (4 * max(1.0, float(acc.std())))

    def _activation(self, activation: str, clamp_max: int | None) -> dict[str, Any]:
        if activation != "relu6":
            return {"activation": activation}
        if clamp_max is None:
            clamp_max = int(self.rng.integers(max(1, self.top // 2), self.top + 1))
        return {"activation": "relu6", "clamp_max": clamp_max}

    def _pool(self, op: str, x: str, k: int, stride: int | None, name: str | None) -> str:
        s = k if stride is None else stride
        name = name or self._name(op[:7])
        node = {"op": op, "name": name, "inputs": [x], "kernel_size": k, "stride": s}
        c, h, w = self.shapes[x]
        return self._append(node, (c, windows(h, k, s), windows(w, k, s)))

    def _weighted(
        self,
        op: str,
        x: str,
        fields: dict[str, Any],
        activation: str,
        clamp_max: int | None,
        weights: Any,
        bias: Any,
        multiplier: Any,
        shift: Any,
        gain: float,
        name: str | None,
    ) -> str:
        name = name or self._name("conv" if op == "conv2d" else "fc")
        node: dict[str, Any] = {"op": op, "name": name, "inputs": [x], **fields}
        node["weight_bits"] = self.weight_bits
        node.update(self._activation(activation, clamp_max))
        shape = weight_shape(node)
        out = shape[0]
        codebook, codes = self._codebook(shape, weights)
        self.tensors[f"{name}.codes"] = pack_codes(codes, self.weight_bits)
        self.tensors[f"{name}.codebook"] = codebook
        self.tensors[f"{name}.bias"] = np.zeros(out, dtype=np.int32)
        plain = run_node({**node, "activation": "none"}, [self.calib[x]], self.tensors, self.bits)
        per_channel = np.moveaxis(plain, 1, 0).reshape(out, -1)  # (O, N*H*W) accumulators
        if bias is None:  # centre each channel a little above 0: about a third is clipped
            bias = np.round(per_channel.std(axis=1) / 2 - per_channel.mean(axis=1))
        self.tensors[f"{name}.bias"] = np.asarray(bias, dtype=np.int32).reshape(out)
        if activation == "none":
            self.accumulators.add(name)
        else:
            if multiplier is None:
                unit = gain * self._unit(plain)
                per = self.rng.random() < 0.5
                reals = unit * (self.rng.uniform(0.5, 2.0, out) if per else np.ones(1))
                pairs = [quantize_multiplier(float(r)) for r in reals]
                multiplier, shift = [m for m, _ in pairs], [s for _, s in pairs]
            self.tensors[f"{name}.multiplier"] = np.atleast_1d(np.asarray(multiplier, np.int32))
            self.tensors[f"{name}.shift"] = np.atleast_1d(np.asarray(shift, np.int32))
        if op == "linear":
            node_out: tuple[int, ...] = (out,)
        else:
            k, s, p = fields["kernel_size"], fields["stride"], fields["padding"]
            node_out = (out, *(windows(n + 2 * p, k, s) for n in self.shapes[x][1:]))
        return self._append(node, node_out)

    def _codebook(self, shape: tuple[int, ...], weights: Any) -> tuple[np.ndarray, np.ndarray]:
        """(codebook int32 (2^b,), codes) for given integer weights, or random ones."""
        size = 1 << self.weight_bits
        if weights is None:
            limit = (1 << (self.codebook_bits - 1)) - 1
            codebook = np.sort(self.rng.integers(-limit, limit + 1, size=size))
            return codebook.astype(np.int32), self.rng.integers(0, size, size=int(np.prod(shape)))
        w = np.asarray(weights, dtype=np.int64).reshape(shape)
        values, codes = np.unique(w, return_inverse=True)
        assert len(values) <= size, f"{len(values)} distinct weights do not fit {size} codes"
        codebook = np.concatenate([values, np.full(size - len(values), values[-1])])
        return codebook.astype(np.int32), codes.ravel()


BLOCKS = ("conv", "separable", "grouped", "res_acc", "res_codes", "res_proj", "maxpool", "avgpool")
HEADS = ("gap", "gap_mlp", "flatten", "flat_res")


def random_dag_network(
    rng: np.random.Generator | int,
    *,
    activation_bits: int = 4,
    weight_bits: int = 4,
    codebook_bits: int = 8,
    saturate: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A random valid version-3 network (manifest, tensors), the same for the same seed or
    generator state: a stem convolution, then every block of BLOCKS that still fits the
    map, in random order (convolutions with stride 2 and padding at the borders, depthwise +
    pointwise, grouped, residual adds whose first input is accumulators or codes, one with
    a strided projection, max and average pools), then one of HEADS (global average pool
    or flatten, linear layers, an add of flat values). Odd sizes; a one-channel input
    makes a depthwise convolution with one channel. `saturate=True` makes every add's sum
    run past its top (they clip)."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    c = int(rng.choice([1, 2, 3]))
    b = GraphBuilder(
        rng,
        (c, int(rng.integers(7, 16)), int(rng.integers(7, 16))),
        activation_bits=activation_bits,
        weight_bits=weight_bits,
        codebook_bits=codebook_bits,
    )
    gain = 8.0 if saturate else 1.0
    act = ("relu", "relu6")
    x = INPUT
    if c == 1:
        x = b.depthwise(x, 3, padding=1, activation=str(rng.choice(act)))
    x = b.conv(x, int(rng.integers(2, 6)), 3, stride=int(rng.choice([1, 2])), padding=1)
    for block in rng.permutation(BLOCKS):
        ch, h, w = b.shapes[x]
        small = min(h, w)
        if block == "conv" and small >= 2:
            k = int(rng.choice([1, 2, 3]))
            x = b.conv(
                x,
                int(rng.integers(2, 7)),
                k,
                stride=int(rng.choice([1, 2])),
                padding=int(rng.integers(0, 2)) if small >= k else 1,
                activation=str(rng.choice(act)),
            )
        elif block == "separable":
            x = b.depthwise(x, 3, stride=int(rng.choice([1, 2])), padding=1, activation="relu6")
            x = b.conv(x, int(rng.integers(2, 7)), 1, activation=str(rng.choice(act)))
        elif block == "grouped" and ch > 1:
            g = int(rng.choice([d for d in range(2, ch + 1) if ch % d == 0]))
            x = b.conv(x, g * int(rng.integers(1, 3)), 3, padding=1, groups=g)
        elif block == "res_acc":
            branch = b.conv(x, ch, 3, padding=1, activation="none")
            x = b.add(branch, x, activation=str(rng.choice(act)), gain=gain)
        elif block == "res_codes":
            branch = b.conv(x, ch, 3, padding=1, activation=str(rng.choice(act)))
            x = b.add(branch, x, activation=str(rng.choice(act)), gain=gain)
        elif block == "res_proj" and small >= 3:
            out = int(rng.integers(2, 7))
            branch = b.conv(x, out, 3, stride=2, padding=1)
            branch = b.conv(branch, out, 3, padding=1, activation="none")
            shortcut = b.conv(x, out, 1, stride=2)
            x = b.add(branch, shortcut, gain=gain)
        elif block in ("maxpool", "avgpool") and small >= 2:
            k = int(rng.choice([2, 3])) if small >= 3 else 2
            pool = b.maxpool if block == "maxpool" else b.avgpool
            x = pool(x, k, int(rng.choice([1, 2])))
    classes = int(rng.integers(2, 6))
    head = str(rng.choice(HEADS))
    if head == "flatten":
        x = b.linear(b.flatten(x), classes, activation="none")
    elif head == "gap":
        x = b.linear(b.global_avgpool(x), classes, activation="none")
    elif head == "gap_mlp":
        x = b.linear(b.global_avgpool(x), int(rng.integers(3, 9)), activation=str(rng.choice(act)))
        x = b.linear(x, classes, activation="none")
    else:  # an add of flat values: linear accumulators + the pooled codes
        pooled = b.global_avgpool(x)
        branch = b.linear(pooled, b.shapes[pooled][0], activation="none")
        x = b.linear(b.add(branch, pooled, gain=gain), classes, activation="none")
    return b.network()


def random_dag_bundle(rng: np.random.Generator | int, **kwargs: Any) -> Bundle:
    """`random_dag_network(rng, **kwargs)` encoded and decoded: a validated Bundle."""
    return decode_bundle(encode_bundle(*random_dag_network(rng, **kwargs)))


def random_codes(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    """n random input codes (N, C, H, W) for a bundle's input, int64."""
    spec = bundle.manifest["input"]
    top = (1 << int(bundle.manifest["activation_bits"])) - 1
    shape = (n, spec["channels"], spec["height"], spec["width"])
    return np.random.default_rng(seed).integers(0, top + 1, size=shape)
