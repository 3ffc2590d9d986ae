"""The search space: the five operators (the only copy in the project) and sliceable layers."""

from fasterseg.search_space.operators import (
    OPERATORS,
    ConvNorm,
    FeatureFusion,
    Head,
    Operator,
    build_operator,
)
from fasterseg.search_space.slimmable import SlimBatchNorm2d, SlimConv2d, make_bn

__all__ = [
    "OPERATORS",
    "ConvNorm",
    "FeatureFusion",
    "Head",
    "Operator",
    "SlimBatchNorm2d",
    "SlimConv2d",
    "build_operator",
    "make_bn",
]
