"""Readable renderings of a derived architecture: a text table and a diagram like paper Fig. 6.

The diagram puts cells on a layer x downsample-rate grid (rate 8 at the top), coloured by
operator and labelled with their expansion ratio chi; cells shared by several branches are drawn
once with a thick outline; every branch ends in an arrow to the head.
"""

from __future__ import annotations

from pathlib import Path

from fasterseg.arch.schema import Arch

OP_COLORS = {
    "skip": "#bdbdbd",
    "conv": "#4e79a7",
    "zoomed_conv": "#59a14f",
    "conv_x2": "#f28e2b",
    "zoomed_conv_x2": "#e15759",
}
OP_SHORT = {"skip": "skip", "conv": "conv", "zoomed_conv": "zconv", "conv_x2": "conv x2",
            "zoomed_conv_x2": "zconv x2"}


def format_arch(arch: Arch) -> str:
    """A plain-text table per branch: cell, operator, rate, stride, chi, channels in -> out."""
    shared = arch.shared_prefix() if len(arch.branches) > 1 else 0
    rates = ", ".join(f"1/{b.output_rate}" for b in arch.branches)
    lines = [
        f"{arch.name}: stem chi={arch.stem_ratio} ({arch.stem_channels} ch), "
        f"head chi={arch.head_ratio}, {len(arch.branches)} branch(es) -> {rates}"
        + (f", {shared} shared cell(s)" if shared else "")
        + (f", detail head {arch.detail_channels} ch at 1/{arch.detail_rate}"
           if arch.detail_channels else ""),
    ]
    for bi, branch in enumerate(arch.branches):
        lines.append(f"  branch {bi} -> 1/{branch.output_rate} ({len(branch.cells)} cells)")
        lines.append("     #  op               rate  stride  chi  channels")
        c_in = arch.stem_channels
        for i, c in enumerate(branch.cells):
            tag = "  shared" if i < shared else ""
            lines.append(
                f"    {i:2d}  {c.op:<15}  1/{c.rate:<3} {c.stride:<6}  {c.ratio:<3}  "
                f"{c_in}->{c.out_channels}{tag}"
            )
            c_in = c.out_channels
    return "\n".join(lines)


def draw_arch(arch: Arch, path: str | Path, title: str | None = None, dpi: int = 120) -> Path:
    """Write a PNG (or any matplotlib format by suffix) diagram of ``arch``; returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    from matplotlib.patches import FancyBboxPatch, Patch

    from fasterseg.utils.io import atomic_write

    shared = arch.shared_prefix() if len(arch.branches) > 1 else 0
    n_max = max(len(b.cells) for b in arch.branches)
    levels = {8: 0, 16: 1, 32: 2}
    nb = len(arch.branches)
    fig_w = max(6.0, 1.0 + 0.75 * (n_max + 3))
    fig = Figure(figsize=(fig_w, 3.6 + 0.5 * nb))
    ax = fig.subplots()
    box_w, box_h = 0.7, 0.32

    def ypos(rate: int, bi: int, is_shared: bool) -> float:
        off = 0.0 if is_shared or nb == 1 else (bi - (nb - 1) / 2) * 0.38
        return levels.get(rate, 0) + off

    branch_colors = ["#333333", "#7b3294", "#008837"]
    ax.add_patch(FancyBboxPatch((-1.6 - box_w / 2, -box_h / 2), box_w + 0.4, box_h,
                                boxstyle="round,pad=0.02", fc="#eeeeee", ec="black"))
    ax.text(-1.4, 0, f"stem\nchi {arch.stem_ratio}", ha="center", va="center", fontsize=7)
    head_x = n_max + 0.8
    ax.add_patch(FancyBboxPatch((head_x - 0.35, -box_h / 2), 0.9, box_h,
                                boxstyle="round,pad=0.02", fc="#eeeeee", ec="black"))
    ax.text(head_x + 0.1, 0, f"head\nchi {arch.head_ratio}", ha="center", va="center", fontsize=7)
    drawn: set[int] = set()
    for bi, branch in enumerate(arch.branches):
        color = branch_colors[bi % len(branch_colors)]
        prev = (-1.6 + box_w / 2 + 0.2, 0.0)
        for i, c in enumerate(branch.cells):
            is_shared = i < shared
            x, y = float(i), ypos(c.rate, bi, is_shared)
            arrow = dict(arrowstyle="-|>", color=color, lw=1.0, shrinkA=0, shrinkB=0)
            ax.annotate("", xy=(x - box_w / 2, y), xytext=prev, arrowprops=arrow)
            if not (is_shared and i in drawn):
                ax.add_patch(FancyBboxPatch(
                    (x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                    fc=OP_COLORS.get(c.op, "#cccccc"), ec="black", lw=2.2 if is_shared else 0.6,
                ))
                label = f"{c.ratio}" + (" ↓" if c.stride == 2 else "")
                ax.text(x, y, label, ha="center", va="center", fontsize=7, color="white",
                        fontweight="bold")
                if is_shared:
                    drawn.add(i)
            prev = (x + box_w / 2, y)
        ax.annotate("", xy=(head_x - 0.35, 0.0), xytext=prev,
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.0, ls="--",
                                    connectionstyle="arc3,rad=0.15"))
        ax.text(prev[0] + 0.05, prev[1] + 0.22, f"1/{branch.output_rate}", fontsize=7, color=color)
    ax.set_xlim(-2.2, head_x + 0.9)
    ax.set_ylim(2.7, -0.7)
    ax.set_yticks([0, 1, 2])
    ax.set_yticklabels(["1/8", "1/16", "1/32"])
    ax.set_xticks(range(n_max))
    ax.set_xlabel("cell (layer of the derived branch)")
    ax.set_ylabel("downsample rate")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    used = sorted({c.op for b in arch.branches for c in b.cells}, key=list(OP_COLORS).index)
    handles = [Patch(fc=OP_COLORS[o], ec="black", label=OP_SHORT.get(o, o)) for o in used]
    if shared:
        handles.append(Patch(fc="white", ec="black", lw=2.2, label=f"shared ({shared})"))
    ax.legend(handles=handles, loc="lower left", fontsize=7, ncol=2, frameon=True)
    ax.set_title(title or f"{arch.name}: numbers = expansion ratio chi, ↓ = stride 2", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fmt = out.suffix.lstrip(".") or "png"
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=dpi), mode="wb")
    return out
