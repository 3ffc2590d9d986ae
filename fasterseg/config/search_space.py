"""The ``space:`` section: the multi-resolution search space shared by supernet and latency table.

Channel counts follow the paper: a feature at downsample rate ``s`` with expansion ratio ``chi``
has ``s * chi`` channels (``s * Fch * width`` in the authors' notation, Fch = 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasterseg.errors import UserError

OPERATORS = ("skip", "conv", "zoomed_conv", "conv_x2", "zoomed_conv_x2")  # official index order
RATES = (8, 16, 32)  # downsample rates an architecture file may use

# Allowed ranges (inclusive) of the architecture file (``fasterseg.arch.schema`` uses them), here
# so that a search space is bounded the same way: a space whose derived nets the schema would
# refuse is refused before the search starts. The paper's space: L = 16 cells per branch, ratios
# {4..12}, stem and head ratio 12 (teacher), 19 classes; 3x the cells and 2x the widths are
# allowed (the largest such net has ~0.5 G parameters). num_classes stops at 254: labels are
# 8-bit, 255 = ignore.
LIMITS: dict[str, tuple[int, int]] = {
    "num_classes": (1, 254),
    "stem_ratio": (1, 24),
    "head_ratio": (1, 24),
    "ratio": (1, 24),  # cell output expansion ratio chi
    "cells": (1, 48),  # cells per branch
    "name": (1, 128),  # characters
    "detail_channels": (0, 256),  # optional 1/4-resolution detail head (0 = paper: none)
}
DETAIL_RATES = (2, 4)  # the stem features a detail head can read: 1/2 or 1/4 of the input


@dataclass
class SearchSpaceConfig:
    num_layers: int = 16  # L
    rates: list[int] = field(default_factory=lambda: [8, 16, 32])  # searchable downsample rates
    ratios: list[int] = field(default_factory=lambda: [4, 6, 8, 10, 12])  # expansion ratios chi
    operators: list[str] = field(default_factory=lambda: list(OPERATORS))
    teacher_stem_ratio: int = 12  # stem/head chi of the teacher (full width)
    teacher_head_ratio: int = 12
    student_stem_ratio: int = 8  # stem/head chi of the student (8/12 of full width)
    student_head_ratio: int = 8
    num_branches: int = 2  # b

    @property
    def max_ratio(self) -> int:
        return max(self.ratios)

    def validate(self) -> None:
        max_cells = LIMITS["cells"][1]
        if not 3 <= self.num_layers <= max_cells:
            raise UserError(f"config: space.num_layers must be between 3 and {max_cells} (the "
                            f"architecture file's cells per branch), got {self.num_layers}")
        if not self.rates or self.rates != sorted(set(self.rates)) or self.rates[0] != 8:
            raise UserError(f"config: space.rates must start at 8 and increase, got {self.rates}")
        for a, b in zip(self.rates, self.rates[1:]):
            if b != 2 * a:
                raise UserError(f"config: space.rates must double at each step, got {self.rates}")
        if self.rates[-1] > RATES[-1]:
            raise UserError(f"config: space.rates must be at most {RATES[-1]} (the architecture "
                            f"file's rates are {list(RATES)}), got {self.rates}")
        lo, hi = LIMITS["ratio"]
        if not self.ratios or not all(lo <= r <= hi for r in self.ratios):
            raise UserError(f"config: space.ratios must be integers between {lo} and {hi}, got "
                            f"{self.ratios}")
        for role in ("teacher", "student"):
            for part in ("stem", "head"):
                name, (lo, hi) = f"{role}_{part}_ratio", LIMITS[f"{part}_ratio"]
                v = getattr(self, name)
                if not lo <= v <= hi:
                    raise UserError(f"config: space.{name} must be between {lo} and {hi}, got {v}")
        bad = [o for o in self.operators if o not in OPERATORS]
        if bad:
            raise UserError(f"config: unknown operator {bad[0]!r} in space.operators ({OPERATORS})")
        if not 1 <= self.num_branches <= len(self.rates):
            raise UserError("config: space.num_branches must be between 1 and len(space.rates)")
