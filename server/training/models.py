"""CNN families the server trains, restricted to the ops the integer engine runs
(conv2d, maxpool2d, flatten, linear; ReLU is fused into the layer before it).

A model is an `nn.Sequential` of those modules; `graph_of(model)` turns it into the
manifest graph (docs/ARCHITECTURE.md, "The integer network, precisely"). Add a family
with `@register("name")` on a builder `(in_channels, num_classes, input_size) -> nn.Sequential`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from shared.errors import ConfigError
from shared.network import WEIGHTED_OPS, is_relu_chain, windows

__all__ = [
    "MODEL_BUILDERS",
    "register",
    "build_model",
    "graph_of",
    "weighted_layers",
    "layer_name",
    "float_param_bytes",
    "build_lenet",
]

HIDDEN = 512
Builder = Callable[[int, int, int], nn.Sequential]
MODEL_BUILDERS: dict[str, Builder] = {}


def register(arch: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        MODEL_BUILDERS[arch] = fn
        return fn

    return deco


def build_model(arch: str, in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    if arch not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model family {arch!r}; known: {sorted(MODEL_BUILDERS)}")
    model = MODEL_BUILDERS[arch](in_channels, num_classes, input_size)
    _name_layers(model)
    graph_of(model)  # fails early on an op the integer engine does not run
    return model


@register("lenet")
def build_lenet(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """LeNet-style for 1x28x28: (conv5 -> ReLU -> maxpool2) x2 -> linear -> ReLU -> linear.
    Channels 16/32 keep the convolutions (most of the compute) cheap; the 512-unit hidden
    layer holds most weights, so the fixed bundle overhead (header, biases) stays small
    next to the packed codes (a W4 bundle is ~1/7.8 of the float32 parameters)."""
    side = input_size
    for _ in range(2):
        side = windows(windows(side, 5, 1), 2, 2)  # 28 -> 24 -> 12 -> 8 -> 4
    if side < 1:
        raise ConfigError(f"lenet needs input_size >= 16, got {input_size}")
    return nn.Sequential(
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
    )


def _name_layers(model: nn.Sequential) -> None:
    """Give each module a stable manifest name: conv1, conv2, pool1, fc1, ... ."""
    counts: dict[str, int] = {}
    prefix = {nn.Conv2d: "conv", nn.Linear: "fc", nn.MaxPool2d: "pool", nn.Flatten: "flatten"}
    for m in model:
        p = prefix.get(type(m))
        if p is None:
            continue
        counts[p] = counts.get(p, 0) + 1
        m.siq_name = f"{p}{counts[p]}"  # type: ignore[assignment]


def _int_pair(v: int | tuple[int, ...], what: str) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ConfigError(f"non-square {what} {v} is not supported by the engine")
        return int(v[0])
    return int(v)


def layer_name(m: nn.Module) -> str:
    """The manifest name `build_model` gave a layer (conv1, fc2, ...)."""
    name = m.__dict__.get("siq_name")
    if not isinstance(name, str):
        raise ConfigError(f"{type(m).__name__} has no layer name (build it with build_model)")
    return name


def weighted_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in model.children() if isinstance(m, nn.Conv2d | nn.Linear)]


def graph_of(model: nn.Sequential, weight_bits: int | None = None) -> list[dict]:
    """The manifest graph: one dict per conv2d/linear/maxpool2d/flatten, ReLU fused."""
    mods = list(model)
    graph: list[dict] = []
    for i, m in enumerate(mods):
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        name = getattr(m, "siq_name", f"layer{i}")
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or _int_pair(m.dilation, "dilation") != 1:
                raise ConfigError("grouped/dilated convolutions are not supported")
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ConfigError("only explicit zero padding is supported")
            graph.append(
                {
                    "op": "conv2d",
                    "name": name,
                    "in_channels": m.in_channels,
                    "out_channels": m.out_channels,
                    "kernel_size": _int_pair(m.kernel_size, "kernel"),
                    "stride": _int_pair(m.stride, "stride"),
                    "padding": _int_pair(m.padding, "padding"),
                    "weight_bits": weight_bits,
                    "relu": relu,
                }
            )
        elif isinstance(m, nn.Linear):
            graph.append(
                {
                    "op": "linear",
                    "name": name,
                    "in_features": m.in_features,
                    "out_features": m.out_features,
                    "weight_bits": weight_bits,
                    "relu": relu,
                }
            )
        elif isinstance(m, nn.MaxPool2d):
            if _int_pair(m.padding, "padding") != 0 or m.ceil_mode:
                raise ConfigError("maxpool2d must have no padding and floor mode")
            graph.append(
                {
                    "op": "maxpool2d",
                    "name": name,
                    "kernel_size": _int_pair(m.kernel_size, "kernel"),
                    "stride": _int_pair(m.stride if m.stride is not None else m.kernel_size, "s"),
                }
            )
        elif isinstance(m, nn.Flatten):
            graph.append({"op": "flatten", "name": name})
        elif isinstance(m, nn.ReLU):
            prev = mods[i - 1] if i > 0 else None
            if not isinstance(prev, nn.Conv2d | nn.Linear):
                raise ConfigError("ReLU must directly follow a conv2d or linear layer")
        else:
            raise ConfigError(f"module {type(m).__name__} is not supported by the integer engine")
    if not is_relu_chain([g["relu"] for g in graph if g["op"] in WEIGHTED_OPS]):
        raise ConfigError("every weighted layer but the last must be followed by a ReLU")
    return graph


def float_param_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters as float32 (the size the bundle is compared with)."""
    return sum(p.numel() for p in model.parameters()) * 4


@register("photonet")
def build_photonet(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Small VGG-style net for RGB photos (3x64x64): a stride-2 conv3 (pad 1) of 32 channels
    -> ReLU, three (conv3 pad 1 -> ReLU -> maxpool2) blocks of 64/64/128 channels, then a
    128-unit hidden layer. No BatchNorm or dropout: neither is an integer-engine op;
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
    return nn.Sequential(
        *layers,
        nn.Flatten(),  # (N, 128 * side * side)
        nn.Linear(c * side * side, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),  # (N, classes) logits
    )
