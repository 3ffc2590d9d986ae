"""The ``space:`` section: the multi-resolution search space shared by supernet and latency table.

Channel counts follow the paper: a feature at downsample rate ``s`` with expansion ratio ``chi``
has ``s * chi`` channels (``s * Fch * width`` in the authors' notation, Fch = 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasterseg.errors import UserError

OPERATORS = ("skip", "conv", "zoomed_conv", "conv_x2", "zoomed_conv_x2")  # official index order


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
        if self.num_layers < 3:
            raise UserError("config: space.num_layers must be >= 3")
        if self.rates != sorted(set(self.rates)) or self.rates[0] != 8:
            raise UserError(f"config: space.rates must start at 8 and increase, got {self.rates}")
        for a, b in zip(self.rates, self.rates[1:]):
            if b != 2 * a:
                raise UserError(f"config: space.rates must double at each step, got {self.rates}")
        if not self.ratios or min(self.ratios) <= 0:
            raise UserError(f"config: space.ratios must be positive integers, got {self.ratios}")
        bad = [o for o in self.operators if o not in OPERATORS]
        if bad:
            raise UserError(f"config: unknown operator {bad[0]!r} in space.operators ({OPERATORS})")
        if not 1 <= self.num_branches <= len(self.rates):
            raise UserError("config: space.num_branches must be between 1 and len(space.rates)")
