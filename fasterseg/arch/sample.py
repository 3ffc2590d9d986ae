"""Random derived architectures from a search space (latency-table checks, tests, baselines).

A sample looks like the output of derivation (facts section 7): one operator per supernet cell
(layer, scale) and one expansion ratio per feature, shared by every branch that passes there;
``b`` branches with distinct output rates, each a path through the supernet with random
downsample positions; branches that begin identically share those cells. Like derivation, which
removes kept skips, the depth varies (between ``min_layers`` and L). To spread the latencies (a
good check needs fast and slow nets) each sample draws its own operator and ratio preferences.
"""

from __future__ import annotations

import random
from typing import Literal

from fasterseg.arch.schema import Arch
from fasterseg.config.search_space import SearchSpaceConfig

Role = Literal["student", "teacher"]


def _weights(rng: random.Random, n: int) -> list[float]:
    """A Dirichlet(1) draw: per-sample preferences."""
    g = [rng.gammavariate(1.0, 1.0) for _ in range(n)]
    s = sum(g)
    return [x / s for x in g]


def sample_arch(
    space: SearchSpaceConfig,
    rng: random.Random,
    role: Role = "student",
    num_classes: int = 19,
    name: str = "sample",
    allow_skip: bool = False,
    min_layers: int | None = None,
) -> Arch:
    """One random architecture of ``space`` (validated through the architecture schema).

    Args:
        role: ``student`` uses the student stem/head ratios and random widths; ``teacher`` uses
            the teacher ratios and the widest width everywhere (the teacher has no gamma).
        allow_skip: derived networks contain no skip cells, so skip is off by default.
        min_layers: shallowest depth (default ``max(3, L // 2)``).
    """
    L = space.num_layers
    n_scales = len(space.rates)
    b = min(space.num_branches, n_scales)
    ops = [o for o in space.operators if allow_skip or o != "skip"] or list(space.operators)
    lo = max(3, L // 2) if min_layers is None else max(min_layers, n_scales)
    depth = rng.randint(min(lo, L), L)
    stem, head = (
        (space.teacher_stem_ratio, space.teacher_head_ratio)
        if role == "teacher"
        else (space.student_stem_ratio, space.student_head_ratio)
    )
    op_w = _weights(rng, len(ops))
    ratio_w = _weights(rng, len(space.ratios))
    op_grid = [[rng.choices(ops, op_w)[0] for _ in range(n_scales)] for _ in range(depth)]
    if role == "teacher":
        width_grid = [[space.max_ratio] * n_scales for _ in range(depth)]
    else:
        width_grid = [
            [rng.choices(space.ratios, ratio_w)[0] for _ in range(n_scales)] for _ in range(depth)
        ]

    scales = sorted(rng.sample(range(n_scales), b), reverse=True)
    branches = []
    for j_out in scales:
        downs = set(rng.sample(range(depth - 1), j_out))
        cells, j = [], 0
        for layer in range(depth):
            stride = 2 if layer in downs else 1
            j_next = j + (stride == 2)
            ratio = head if layer == depth - 1 else width_grid[layer][j_next]
            cells.append(
                {"op": op_grid[layer][j], "rate": space.rates[j], "stride": stride, "ratio": ratio}
            )
            j = j_next
        branches.append({"output_rate": space.rates[j_out], "cells": cells})
    return Arch.from_dict({
        "schema": "fasterseg.arch/1",
        "name": name,
        "num_classes": num_classes,
        "stem_ratio": stem,
        "head_ratio": head,
        "branches": branches,
        "provenance": {"source": "fasterseg.arch.sample", "role": role, "depth": depth},
    })


def sample_archs(
    space: SearchSpaceConfig, n: int, seed: int = 0, role: Role = "student", num_classes: int = 19,
    **kw,
) -> list[Arch]:
    """``n`` reproducible samples (``seed``)."""
    rng = random.Random(seed)
    return [
        sample_arch(space, rng, role, num_classes, name=f"sample{i:03d}", **kw) for i in range(n)
    ]
