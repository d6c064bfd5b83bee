"""Batch norm folded into the convolution before it, so the integer network has none
(docs/ARCHITECTURE.md, "The server's networks"). With the running statistics (mean mu,
variance v), the affine (gamma, beta) and eps, per output channel o:

    W'[o] = W[o] * gamma[o] / sqrt(v[o] + eps)
    b'[o] = beta[o] + (b[o] - mu[o]) * gamma[o] / sqrt(v[o] + eps)

so conv'(x) = BN(conv(x)) in eval mode. SIQ folds before its first k-means step: every
codebook then holds the weights the integer network multiplies by, and retraining runs on
the folded network (batch statistics no longer move).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from server.training.models import GraphNet

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: GraphNet) -> GraphNet:
    """A copy of `model` with each BatchNorm2d folded into its convolution (which gains a
    bias where it had none); the copy has no norms. A model without any is just copied."""
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for name, bn in folded.norms.items():
            conv = folded.ops[name]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError(f"{name}: batch norm without running statistics")
            w = conv.weight.double()  # (O, I/g, k, k)
            b = conv.bias.double() if conv.bias is not None else torch.zeros(len(w)).double()
            gamma = bn.weight.double() if bn.weight is not None else torch.ones(len(w)).double()
            beta = bn.bias.double() if bn.bias is not None else torch.zeros(len(w)).double()
            factor = gamma / torch.sqrt(bn.running_var.double() + bn.eps)  # (O,)
            dtype = conv.weight.dtype
            conv.weight.copy_((w * factor[:, None, None, None]).to(dtype))
            bias = (beta + (b - bn.running_mean.double()) * factor).to(dtype)
            conv.bias = nn.Parameter(bias)
    folded.norms = nn.ModuleDict()
    return folded
