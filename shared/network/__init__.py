"""The integer network's definition, which every reader and writer of a bundle follows
(docs/ARCHITECTURE.md, "The integer network, precisely"):

    graph   the layer graph: ops, shapes, the ReLU-chain rule, codebook sizes, round_half_up
    quant   the arithmetic: input quantiser, requantisation and its checked float forms, bounds
    cost    what a network costs on a chip, from its manifest alone
"""

from shared.network.cost import ENERGY_PJ, ENERGY_SOURCE, cost_report, layer_costs
from shared.network.graph import (
    KNOWN_OPS,
    WEIGHTED_OPS,
    bits_of_codebook,
    carries_relu,
    codebook_size,
    is_relu_chain,
    output_shape,
    round_half_up,
    weight_shape,
    windows,
)
from shared.network.quant import (
    FLOAT32_EXACT,
    FLOAT64_EXACT,
    MAX_ACCUMULATOR,
    accumulator_bound,
    affine_requantize,
    carrier_dtype,
    fit_affine_requant,
    fit_input_quant,
    fit_scaled_requant,
    quantize_input,
    quantize_multiplier,
    requant_thresholds,
    requantize,
    scaled_quantize_input,
    scaled_requantize,
)

__all__ = [
    "WEIGHTED_OPS",
    "KNOWN_OPS",
    "round_half_up",
    "windows",
    "output_shape",
    "weight_shape",
    "carries_relu",
    "is_relu_chain",
    "codebook_size",
    "bits_of_codebook",
    "MAX_ACCUMULATOR",
    "FLOAT32_EXACT",
    "FLOAT64_EXACT",
    "carrier_dtype",
    "quantize_input",
    "quantize_multiplier",
    "requantize",
    "requant_thresholds",
    "fit_affine_requant",
    "affine_requantize",
    "fit_scaled_requant",
    "scaled_requantize",
    "fit_input_quant",
    "scaled_quantize_input",
    "accumulator_bound",
    "ENERGY_PJ",
    "ENERGY_SOURCE",
    "layer_costs",
    "cost_report",
]
