"""The FasterSeg supernet: shared multi-resolution cells, architecture parameters, sampling."""

from fasterseg.supernet.arch_params import (
    ARCHS,
    ArchParams,
    WidthSample,
    gumbel_softmax_hard,
    sample_widths,
)
from fasterseg.supernet.heads import branch_combos, combo_key
from fasterseg.supernet.network import ARCH_SCHEMA, Supernet, downsample_labels

__all__ = [
    "ARCHS",
    "ARCH_SCHEMA",
    "ArchParams",
    "Supernet",
    "WidthSample",
    "branch_combos",
    "combo_key",
    "downsample_labels",
    "gumbel_softmax_hard",
    "sample_widths",
]
