"""The network families the server trains, each a `GraphNet`: the bundle's graph of named
nodes in torch (docs/ARCHITECTURE.md, "The integer network, precisely"), plus batch norm,
which is trained in float and folded away before quantisation (server/training/batchnorm.py).

A node is one op of the integer contract: conv2d (stride, padding, groups) and linear with
their activation fused (relu, relu6 or none: accumulators), add (a residual sum, then relu or
relu6), maxpool2d, avgpool2d, global_avgpool, flatten. A conv2d may carry a BatchNorm2d
between the convolution and the activation. `graph_of(model)` is the manifest's node list.

Add a family with `@register("name")` on a builder `(in_channels, num_classes, input_size)
-> GraphNet`. `lenet` and `photonet` are chains (`chain(...)` of today's modules), which
export writes as version-2 bundles exactly as before; the others are DAGs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import ConfigError
from shared.network import WEIGHTED_OPS, GraphError, check_graph, windows

__all__ = [
    "MODEL_BUILDERS",
    "Node",
    "GraphNet",
    "GraphBuilder",
    "chain",
    "register",
    "build_model",
    "graph_of",
    "weighted_layers",
    "layer_name",
    "float_param_bytes",
    "activate",
    "build_lenet",
    "build_photonet",
    "build_mobilenet",
    "build_resnet",
    "build_dsnet",
    "build_m0net",
    "M0NET_CHANNELS",
]

HIDDEN = 512
RELU6_TOP = 6.0  # relu6's upper clamp, in real units
POOL_OPS = ("maxpool2d", "avgpool2d")


@dataclass(frozen=True)
class Node:
    """One node of the graph: `inputs` name earlier nodes or "input"; `activation` is the
    weighted or add node's (relu, relu6, none), "none" for the others."""

    op: str
    name: str
    inputs: tuple[str, ...]
    activation: str = "none"


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The float network's activation: relu, relu6 (a clamp at 6) or none."""
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.hardtanh(x, 0.0, RELU6_TOP)
    return x


class GraphNet(nn.Module):
    """Nodes in topological order; `ops` holds each conv2d / linear / pool module by node
    name, `norms` the BatchNorm2d of a conv2d that has one (until it is folded)."""

    def __init__(
        self,
        nodes: Iterable[Node],
        modules: dict[str, nn.Module],
        norms: dict[str, nn.BatchNorm2d] | None = None,
    ):
        super().__init__()
        self.nodes = list(nodes)
        self.ops = nn.ModuleDict(modules)
        self.norms = nn.ModuleDict(norms or {})
        for name, m in self.ops.items():
            m.siq_name = name  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        return self.run(x)[self.nodes[-1].name]

    def weighted(self, name: str) -> nn.Conv2d | nn.Linear:
        """The conv2d / linear module of node `name`."""
        m = self.ops[name]
        if not isinstance(m, nn.Conv2d | nn.Linear):
            raise KeyError(f"{name} is not a weighted node")
        return m

    def window(self, name: str) -> tuple[int, int]:
        """(kernel_size, stride) of pool node `name`."""
        m = self.ops[name]
        if not isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            raise KeyError(f"{name} is not a pool node")
        stride = m.stride if m.stride is not None else m.kernel_size
        return _int_pair(m.kernel_size, "kernel"), _int_pair(stride, "stride")

    def run(
        self,
        x: torch.Tensor,
        values: dict[str, torch.Tensor] | None = None,
        start: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Every node's float value by name ("input" too). With `values` from an earlier
        run, only the nodes from `start` on are recomputed (the ones before are kept)."""
        out = dict(values) if values is not None else {}
        out["input"] = x
        for node in self.nodes[start:]:
            out[node.name] = self.apply_node(node, [out[i] for i in node.inputs])
        return out

    def apply_node(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        """One node of the float network."""
        if node.op in WEIGHTED_OPS:
            y = self.ops[node.name](args[0])
            if node.name in self.norms:
                y = self.norms[node.name](y)
            return activate(y, node.activation)
        if node.op == "add":
            return activate(args[0] + args[1], node.activation)
        if node.op == "global_avgpool":
            return args[0].mean((2, 3))
        if node.op == "flatten":
            return torch.flatten(args[0], 1)
        return self.ops[node.name](args[0])  # maxpool2d, avgpool2d


Builder = Callable[[int, int, int], GraphNet]
MODEL_BUILDERS: dict[str, Builder] = {}


def register(arch: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        MODEL_BUILDERS[arch] = fn
        return fn

    return deco


def build_model(arch: str, in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    if arch not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model family {arch!r}; known: {sorted(MODEL_BUILDERS)}")
    model = MODEL_BUILDERS[arch](in_channels, num_classes, input_size)
    graph = graph_of(model, 8)
    for node in graph:  # relu6's clamp comes with calibration: any valid one for the check
        if node.get("activation") == "relu6":
            node["clamp_max"] = 255
    try:  # fails early on what the integer engine does not run
        check_graph(graph, (in_channels, input_size, input_size), 8)
    except GraphError as exc:
        raise ConfigError(f"{arch}: {exc}") from None
    return model


def chain(modules: Iterable[nn.Module]) -> GraphNet:
    """A sequential stack of Conv2d / Linear (each optionally followed by ReLU), MaxPool2d
    and Flatten as a graph, named conv1, pool1, flatten1, fc1, ... in order."""
    mods = list(modules)
    counts: dict[str, int] = {}
    prefix = {nn.Conv2d: "conv", nn.Linear: "fc", nn.MaxPool2d: "pool", nn.Flatten: "flatten"}
    ops = {nn.Conv2d: "conv2d", nn.Linear: "linear", nn.MaxPool2d: "maxpool2d"}
    nodes: list[Node] = []
    named: dict[str, nn.Module] = {}
    last = "input"
    for i, m in enumerate(mods):
        if isinstance(m, nn.ReLU):
            if not nodes or nodes[-1].op not in WEIGHTED_OPS:
                raise ConfigError("ReLU must directly follow a conv2d or linear layer")
            continue
        p = prefix.get(type(m))
        if p is None:
            raise ConfigError(f"module {type(m).__name__} is not supported by the integer engine")
        counts[p] = counts.get(p, 0) + 1
        name = f"{p}{counts[p]}"
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        if isinstance(m, nn.Flatten):
            nodes.append(Node("flatten", name, (last,)))
        else:
            nodes.append(Node(ops[type(m)], name, (last,), "relu" if relu else "none"))
            named[name] = m
        last = name
    return GraphNet(nodes, named)


class GraphBuilder:
    """Grows a graph node by node; each method returns the new node's name (for `inputs`)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.norms: dict[str, nn.BatchNorm2d] = {}

    def conv(
        self,
        name: str,
        src: str,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        activation: str = "relu",
        bn: bool = True,
        padding: int | None = None,
    ) -> str:
        """conv2d (padding kernel // 2 unless given), with a BatchNorm2d unless bn=False."""
        pad = kernel // 2 if padding is None else padding
        conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=not bn)
        self.modules[name] = conv
        if bn:
            self.norms[name] = nn.BatchNorm2d(cout)
        self.nodes.append(Node("conv2d", name, (src,), activation))
        return name

    def linear(self, name: str, src: str, fin: int, fout: int, activation: str = "none") -> str:
        self.modules[name] = nn.Linear(fin, fout)
        self.nodes.append(Node("linear", name, (src,), activation))
        return name

    def add(self, name: str, acc: str, codes: str, activation: str = "relu") -> str:
        """add(acc, codes): the first input may be accumulators, the second is codes."""
        self.nodes.append(Node("add", name, (acc, codes), activation))
        return name

    def maxpool(self, name: str, src: str, kernel: int) -> str:
        """maxpool2d with stride = kernel."""
        self.modules[name] = nn.MaxPool2d(kernel)
        self.nodes.append(Node("maxpool2d", name, (src,)))
        return name

    def global_avgpool(self, name: str, src: str) -> str:
        self.nodes.append(Node("global_avgpool", name, (src,)))
        return name

    def build(self) -> GraphNet:
        return GraphNet(self.nodes, self.modules, self.norms)


def _int_pair(v: int | tuple[int, ...], what: str) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ConfigError(f"non-square {what} {v} is not supported by the engine")
        return int(v[0])
    return int(v)


def layer_name(m: nn.Module) -> str:
    """The node name of a graph's module (conv1, fc2, b3_dw, ...)."""
    name = m.__dict__.get("siq_name")
    if not isinstance(name, str):
        raise ConfigError(f"{type(m).__name__} has no layer name (build it with build_model)")
    return name


def weighted_layers(model: GraphNet) -> list[nn.Conv2d | nn.Linear]:
    """The conv2d / linear modules, in graph order."""
    return [model.weighted(n.name) for n in model.nodes if n.op in WEIGHTED_OPS]


def _node_fields(model: GraphNet, node: Node, weight_bits: int | None) -> dict:
    """The manifest fields of one node (version 3), checked against what the engine runs."""
    entry: dict = {"op": node.op, "name": node.name, "inputs": list(node.inputs)}
    m = model.ops[node.name] if node.name in model.ops else None  # noqa: SIM401
    if node.op == "conv2d" and isinstance(m, nn.Conv2d):
        if _int_pair(m.dilation, "dilation") != 1:
            raise ConfigError("dilated convolutions are not supported")
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ConfigError("only explicit zero padding is supported")
        entry.update(
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            kernel_size=_int_pair(m.kernel_size, "kernel"),
            stride=_int_pair(m.stride, "stride"),
            padding=_int_pair(m.padding, "padding"),
            groups=m.groups,
        )
    elif node.op == "linear" and isinstance(m, nn.Linear):
        entry.update(in_features=m.in_features, out_features=m.out_features)
    elif node.op in POOL_OPS and isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        if _int_pair(m.padding, "padding") != 0 or m.ceil_mode:
            raise ConfigError(f"{node.op} must have no padding and floor mode")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
            raise ConfigError("avgpool2d divides by its window")
        entry.update(
            kernel_size=_int_pair(m.kernel_size, "kernel"),
            stride=_int_pair(m.stride if m.stride is not None else m.kernel_size, "stride"),
        )
    elif node.op not in ("add", "global_avgpool", "flatten"):
        raise ConfigError(f"{node.name}: op {node.op!r} has no module the engine runs")
    if node.op in WEIGHTED_OPS:
        entry.update(weight_bits=weight_bits, activation=node.activation)
    elif node.op == "add":
        entry["activation"] = node.activation
    return entry


def graph_of(model: GraphNet, weight_bits: int | None = None) -> list[dict]:
    """The manifest graph (format version 3): one dict per node, with its `inputs`; relu6's
    `clamp_max` depends on the calibrated scale and is added by export. (The contract's
    structural rules are shared.network.check_graph's, which `build_model` applies.)"""
    return [_node_fields(model, node, weight_bits) for node in model.nodes]


def float_param_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters as float32 (the size the bundle is compared with)."""
    return sum(p.numel() for p in model.parameters()) * 4


@register("lenet")
def build_lenet(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """LeNet-style for 1x28x28: (conv5 -> ReLU -> maxpool2) x2 -> linear -> ReLU -> linear.
    Channels 16/32 keep the convolutions (most of the compute) cheap; the 512-unit hidden
    layer holds most weights, so the fixed bundle overhead (header, biases) stays small
    next to the packed codes (a W4 bundle is ~1/7.8 of the float32 parameters)."""
    side = input_size
    for _ in range(2):
        side = windows(windows(side, 5, 1), 2, 2)  # 28 -> 24 -> 12 -> 8 -> 4
    if side < 1:
        raise ConfigError(f"lenet needs input_size >= 16, got {input_size}")
    return chain(
        [
            nn.Conv2d(in_channels, 16, 5),  # (N, 16, 24, 24)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 16, 12, 12)
            nn.Conv2d(16, 32, 5),  # (N, 32, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 32, 4, 4)
            nn.Flatten(),  # (N, 512)
            nn.Linear(32 * side * side, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, num_classes),  # (N, classes) logits
        ]
    )


@register("photonet")
def build_photonet(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """Small VGG-style net for RGB photos (3x64x64): a stride-2 conv3 (pad 1) of 32 channels
    -> ReLU, three (conv3 pad 1 -> ReLU -> maxpool2) blocks of 64/64/128 channels, then a
    128-unit hidden layer. No batch norm or dropout (the families below have batch norm);
    augmentation and weight decay regularise instead.

    The strided first layer replaces a full-size conv3 + maxpool2: the 3-channel layer is
    the one integer kernels run worst (no channels to vectorise over), and at stride 2 it has
    a quarter of the positions. With 64 channels in the third block that is 34M multiply-adds
    an image, against 51M for the 32/64/128/128 net with a pooled first block, at the same
    float accuracy on office10 (69.2 % against 67.8-68.3 %, 3 seeds each; the network 0.6x
    the time in ONNX Runtime; bench/results/http_profile.md, 2026-12-03)."""
    side = windows(input_size + 2, 3, 2)  # 64 -> 32
    for _ in range(3):
        side = windows(windows(side + 2, 3, 1), 2, 2)  # 32 -> 16 -> 8 -> 4
    if side < 1:
        raise ConfigError(f"photonet needs input_size >= 16, got {input_size}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU()]
    c = 32
    for out in (64, 64, 128):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = out  # (N, out, S/2, S/2) after each block
    return chain(
        [
            *layers,
            nn.Flatten(),  # (N, 128 * side * side)
            nn.Linear(c * side * side, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),  # (N, classes) logits
        ]
    )


def _separable(
    g: GraphBuilder, src: str, blocks: Iterable[tuple[int, int]], cin: int
) -> tuple[str, int]:
    """MobileNet's depthwise-separable blocks: per (channels, stride), a depthwise 3x3 (at
    that stride) -> BN -> ReLU6, then a pointwise 1x1 -> BN -> ReLU6."""
    for i, (cout, stride) in enumerate(blocks, 1):
        src = g.conv(f"b{i}_dw", src, cin, cin, 3, stride=stride, groups=cin, activation="relu6")
        src = g.conv(f"b{i}_pw", src, cin, cout, 1, activation="relu6")
        cin = cout
    return src, cin


# MobileNetV1 at width 0.5: (channels, stride) of its 13 separable blocks
MOBILENET_BLOCKS = (
    (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2),
    (256, 1), (256, 1), (256, 1), (256, 1), (256, 1), (512, 2), (512, 1),
)  # fmt: skip


@register("mobilenet")
def build_mobilenet(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """MobileNetV1-0.5 for photos (3x64x64): a stride-2 conv3 of 16 channels -> BN -> ReLU6,
    13 depthwise-separable blocks (MOBILENET_BLOCKS: the map halves at 64, 128, 256 and 512
    channels, 32 -> 2 pixels at 64x64), global average pool, linear. About 0.83 M weights and
    12 M multiply-adds an image at 64x64 (docs/MACHINE.md's reference run: 70-81 % float on
    office10)."""
    g = GraphBuilder()
    src = g.conv("stem", "input", in_channels, 16, 3, stride=2, activation="relu6")
    src, c = _separable(g, src, MOBILENET_BLOCKS, 16)
    src = g.global_avgpool("pool", src)
    g.linear("fc", src, c, num_classes)
    return g.build()


@register("dsnet")
def build_dsnet(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """A small depthwise-separable net for digits (1x28x28): conv3 of 16 channels -> BN ->
    ReLU6, four separable blocks (32 s2, 64 s2, 64, 96 s2: 28 -> 14 -> 7 -> 4 pixels),
    global average pool, linear. About 15.5 k weights, 1.5 M multiply-adds an image."""
    g = GraphBuilder()
    src = g.conv("stem", "input", in_channels, 16, 3, activation="relu6")
    src, c = _separable(g, src, ((32, 2), (64, 2), (64, 1), (96, 2)), 16)
    src = g.global_avgpool("pool", src)
    g.linear("fc", src, c, num_classes)
    return g.build()


# m0net's convolution widths: the first map (12x12 at 4 bits) is the arena's largest value
M0NET_CHANNELS = (12, 24, 48)


@register("m0net")
def build_m0net(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """The smallest chip's digits net (1x28x28; a Cortex-M0 with 2 KB of RAM, issue 29):
    conv5 (no padding) -> BN -> ReLU -> maxpool2 (12x12), then two (conv3 pad 1 -> BN -> ReLU
    -> maxpool2) blocks (6x6, 3x3), global average pool, linear. Every max-pool follows its
    convolution alone, so the C generator takes it over the accumulators and never stores the
    unpooled map: the largest value the chip holds is 12x12x12 codes (864 B at 4 bits). About
    14 k weights, 1.0 M multiply-adds an image."""
    c1, c2, c3 = M0NET_CHANNELS
    side = windows(windows(input_size, 5, 1), 2, 2)
    for _ in range(2):
        side = windows(side, 2, 2)
    if side < 1:
        raise ConfigError(f"m0net needs input_size >= 16, got {input_size}")
    g = GraphBuilder()
    src = g.conv("conv1", "input", in_channels, c1, 5, padding=0)
    src = g.maxpool("pool1", src, 2)
    src = g.conv("conv2", src, c1, c2, 3)
    src = g.maxpool("pool2", src, 2)
    src = g.conv("conv3", src, c2, c3, 3)
    src = g.maxpool("pool3", src, 2)
    src = g.global_avgpool("gap", src)
    g.linear("fc", src, c3, num_classes)
    return g.build()


RESNET_WIDTHS = (16, 32, 64, 128)


@register("resnet")
def build_resnet(in_channels: int, num_classes: int, input_size: int) -> GraphNet:
    """ResNet-style for photos (3x64x64): a stride-2 conv3 of 16 channels -> BN -> ReLU,
    one basic block per width of RESNET_WIDTHS (the map halves from the second on: 32 -> 4
    pixels at 64x64), global average pool, linear. A basic block is conv3 -> BN -> ReLU,
    conv3 -> BN (accumulators), + the shortcut, ReLU; the shortcut is the block's input, or
    where the shape changes a 1x1 stride-2 conv -> BN -> ReLU (a projection: an add's second
    input must be codes, which are non-negative, hence the ReLU). About 0.3 M weights."""
    g = GraphBuilder()
    src = g.conv("stem", "input", in_channels, RESNET_WIDTHS[0], 3, stride=2)
    c = RESNET_WIDTHS[0]
    for i, width in enumerate(RESNET_WIDTHS, 1):
        stride = 1 if i == 1 else 2
        h = g.conv(f"b{i}_conv1", src, c, width, 3, stride=stride)
        h = g.conv(f"b{i}_conv2", h, width, width, 3, activation="none")
        short = src
        if stride != 1 or width != c:
            short = g.conv(f"b{i}_proj", src, c, width, 1, stride=stride)
        src = g.add(f"b{i}_add", h, short)
        c = width
    src = g.global_avgpool("pool", src)
    g.linear("fc", src, c, num_classes)
    return g.build()
