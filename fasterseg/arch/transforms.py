"""Architecture edits used by the ablations (paper Table 3)."""

from __future__ import annotations

from dataclasses import replace

from fasterseg.arch.schema import Arch, Branch


def prune_widths(arch: Arch, ratio: int, stem_ratio: int | None = None,
                 head_ratio: int | None = None, name: str | None = None) -> Arch:
    """The "pruned teacher" of Table 3: same cells and paths, every expansion ratio set to ``ratio``.

    Channel pruning by the slimmest expansion ratio; stem and head take the given ratios
    (default: ``ratio`` too). The last cell of each branch keeps feeding the head.
    """
    stem = stem_ratio or ratio
    head = head_ratio or ratio
    branches = []
    for b in arch.branches:
        cells = [replace(c, ratio=ratio) for c in b.cells[:-1]] + [replace(b.cells[-1], ratio=head)]
        branches.append(Branch(b.output_rate, tuple(cells)))
    prov = {**arch.provenance, "pruned_from": arch.name, "pruned_ratio": ratio}
    return Arch(name or f"{arch.name}_pruned{ratio}", arch.num_classes, stem, head, tuple(branches), prov,
                arch.detail_channels, arch.detail_rate)
