"""Readable signatures of the blocks a FasterSeg network is made of, and the walk that lists them.

A latency table maps a *key* to milliseconds. The key names the computation, not the module
class, so that the same table serves the supernet, derived networks and the sampler::

    conv_x2/H64xW128/Cin32/Cout64/s2         one of the five operators (input size, widths, stride)
    conv_norm/H256xW512/Cin3/Cout32/k3/s2    conv-BN-ReLU (stem first conv, arms are k1)
    refine/H32xW64/Cin64+32/Cout64           concat(up, skip) -> 3x3 conv-BN-ReLU
    fusion/H32xW64/Cin64x2                   concat of b branches -> 1x1 conv-BN-ReLU
    head/H32xW64/Cin128/Cout19               3x3 conv-BN-ReLU -> 1x1 classifier
    resize/H8xW16/C128/x2                    bilinear (align_corners) upsample by an integer

H and W are always the block's *input* size. ``arch_blocks`` walks an ``Arch`` exactly the way
``fasterseg.models.FasterSegNet`` executes it (shared cells once), so the discrete latency of an
architecture is the sum of its blocks' entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from fasterseg.arch.schema import Arch
from fasterseg.config.search_space import OPERATORS
from fasterseg.errors import UserError

KINDS = (*OPERATORS, "conv_norm", "refine", "fusion", "head", "resize")


@dataclass(frozen=True)
class Block:
    """One measurable block: its kind and everything its latency depends on."""

    kind: str
    h: int
    w: int
    c_in: int
    c_out: int = 0
    stride: int = 1  # operators, conv_norm
    kernel: int = 3  # conv_norm
    c_skip: int = 0  # refine: channels of the concatenated skip feature
    parts: int = 1  # fusion: number of concatenated branches (c_in channels each)
    scale: int = 1  # resize factor

    @property
    def key(self) -> str:
        hw = f"H{self.h}xW{self.w}"
        k = self.kind
        if k in OPERATORS:
            return f"{k}/{hw}/Cin{self.c_in}/Cout{self.c_out}/s{self.stride}"
        if k == "conv_norm":
            return f"{k}/{hw}/Cin{self.c_in}/Cout{self.c_out}/k{self.kernel}/s{self.stride}"
        if k == "refine":
            return f"{k}/{hw}/Cin{self.c_in}+{self.c_skip}/Cout{self.c_out}"
        if k == "fusion":
            return f"{k}/{hw}/Cin{self.c_in}x{self.parts}"
        if k == "head":
            return f"{k}/{hw}/Cin{self.c_in}/Cout{self.c_out}"
        if k == "resize":
            return f"{k}/{hw}/C{self.c_in}/x{self.scale}"
        raise ValueError(f"unknown block kind {k!r}")

    def input_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        if self.kind == "refine":
            return [(batch, self.c_in, self.h, self.w), (batch, self.c_skip, self.h, self.w)]
        if self.kind == "fusion":
            return [(batch, self.c_in, self.h, self.w)] * self.parts
        return [(batch, self.c_in, self.h, self.w)]

    def build(self) -> nn.Module:
        """The exact module the network runs for this block (eval mode, fresh weights)."""
        from fasterseg.search_space.operators import ConvNorm, FeatureFusion, Head, build_operator

        k = self.kind
        if k in OPERATORS:
            m: nn.Module = build_operator(k, self.c_in, self.c_out, self.stride)
        elif k == "conv_norm":
            m = ConvNorm(self.c_in, self.c_out, self.kernel, self.stride)
        elif k == "refine":
            m = _CatThen(ConvNorm(self.c_in + self.c_skip, self.c_out, 3))
        elif k == "fusion":
            m = _CatThen(FeatureFusion(self.c_in * self.parts))
        elif k == "head":
            m = Head(self.c_in, self.c_out)
        elif k == "resize":
            m = _Resize(self.scale)
        else:
            raise ValueError(f"unknown block kind {k!r}")
        return m.eval()

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolutions (a cost proxy for time estimates)."""
        k, h, w, ci, co, s = self.kind, self.h, self.w, self.c_in, self.c_out, self.stride
        ho, wo = h // s, w // s
        if k == "skip":
            return 0 if s == 1 and ci == co else ho * wo * ci * co
        if k == "conv":
            return ho * wo * ci * co * 9
        if k == "conv_x2":
            return ho * wo * (ci * co + co * co) * 9
        if k == "zoomed_conv":
            return (h // 2) * (w // 2) * ci * co * 9
        if k == "zoomed_conv_x2":
            return (h // 2) * (w // 2) * (ci * co + co * co) * 9
        if k == "conv_norm":
            return ho * wo * ci * co * self.kernel**2
        if k == "refine":
            return h * w * (ci + self.c_skip) * co * 9
        if k == "fusion":
            return h * w * (ci * self.parts) ** 2
        if k == "head":
            mid = ci if ci <= 256 else ci // 2
            return h * w * (ci * mid * 9 + mid * co)
        if k == "resize":
            return h * w * self.scale**2 * ci * 4
        raise ValueError(f"unknown block kind {k!r}")


class _CatThen(nn.Module):
    """Concatenate the inputs along channels, then run ``inner`` (refine and fusion blocks)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.cat(xs, dim=1))


class _Resize(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fasterseg.search_space.operators import resize

        return resize(x, (x.shape[-2] * self.scale, x.shape[-1] * self.scale))


_KEY_RE = re.compile(r"^(?P<kind>[a-z_0-9]+)/H(?P<h>\d+)xW(?P<w>\d+)/(?P<rest>.*)$")


def parse_key(key: str) -> Block:
    """Inverse of ``Block.key`` (used to rebuild a block from a table entry)."""
    m = _KEY_RE.match(key)
    if not m or m["kind"] not in KINDS:
        raise UserError(f"not a latency table key: {key!r}")
    kind, h, w, rest = m["kind"], int(m["h"]), int(m["w"]), m["rest"]
    try:
        if kind in OPERATORS:
            ci, co, s = _fields(r"Cin(\d+)/Cout(\d+)/s(\d+)", rest)
            return Block(kind, h, w, int(ci), int(co), stride=int(s))
        if kind == "conv_norm":
            ci, co, k, s = _fields(r"Cin(\d+)/Cout(\d+)/k(\d+)/s(\d+)", rest)
            return Block(kind, h, w, int(ci), int(co), stride=int(s), kernel=int(k))
        if kind == "refine":
            ci, cs, co = _fields(r"Cin(\d+)\+(\d+)/Cout(\d+)", rest)
            return Block(kind, h, w, int(ci), int(co), c_skip=int(cs))
        if kind == "fusion":
            ci, b = _fields(r"Cin(\d+)x(\d+)", rest)
            return Block(kind, h, w, int(ci), int(ci) * int(b), parts=int(b))
        if kind == "head":
            ci, co = _fields(r"Cin(\d+)/Cout(\d+)", rest)
            return Block(kind, h, w, int(ci), int(co))
        c, f = _fields(r"C(\d+)/x(\d+)", rest)
        return Block(kind, h, w, int(c), int(c), scale=int(f))
    except ValueError:
        raise UserError(f"not a latency table key: {key!r}") from None


def _fields(pattern: str, text: str) -> tuple[str, ...]:
    m = re.fullmatch(pattern, text)
    if m is None:
        raise ValueError(text)
    return m.groups()


# --------------------------------------------------------------------------- network walks


def stem_blocks(stem_ratio: int, size: Sequence[int]) -> list[Block]:
    """The stem (``models.network.build_stem``): 3 -> 4chi s2 -> 8chi x2 s2 -> 8chi x2 s2."""
    h, w = size
    c1, c2 = 4 * stem_ratio, 8 * stem_ratio
    return [
        Block("conv_norm", h, w, 3, c1, stride=2, kernel=3),
        Block("conv_x2", h // 2, w // 2, c1, c2, stride=2),
        Block("conv_x2", h // 4, w // 4, c2, c2, stride=2),
    ]


def aggregation_step(
    rate: int, c_in: int, head_ratio: int, c_skip: int, size: Sequence[int]
) -> list[Block]:
    """One step from ``rate`` to ``rate // 2``: arm 1x1, bilinear x2, concat skip + refine 3x3."""
    h, w = size
    target = rate // 2
    c_mid = target * head_ratio
    return [
        Block("conv_norm", h // rate, w // rate, c_in, c_mid, stride=1, kernel=1),
        Block("resize", h // rate, w // rate, c_mid, c_mid, scale=2),
        Block("refine", h // target, w // target, c_mid, c_mid, c_skip=c_skip),
    ]


def aggregation_blocks(
    c_in: int, out_rate: int, head_ratio: int, skip_channels: dict[int, int], size: Sequence[int]
) -> list[Block]:
    """One branch back to 1/8 (``BranchAggregator``): steps of arm, up x2, cat + refine."""
    blocks = []
    c, rate = c_in, out_rate
    while rate > 8:
        blocks += aggregation_step(rate, c, head_ratio, skip_channels[rate // 2], size)
        c, rate = (rate // 2) * head_ratio, rate // 2
    return blocks


def decoder_blocks(
    head_ratio: int, num_branches: int, num_classes: int, size: Sequence[int]
) -> list[Block]:
    """Fusion of the branches, the head and the final x8 upsample (all at 1/8)."""
    h, w = size
    c = 8 * head_ratio
    return [
        Block("fusion", h // 8, w // 8, c, c * num_branches, parts=num_branches),
        Block("head", h // 8, w // 8, c * num_branches, num_classes),
        Block("resize", h // 8, w // 8, num_classes, num_classes, scale=8),
    ]


def arch_blocks(arch: Arch, size: Sequence[int]) -> list[tuple[str, Block]]:
    """Every block one forward of ``build_model(arch)`` runs at input ``size``, as (part, block).

    ``part`` is one of ``stem``, ``cells``, ``aggregation``, ``decoder``. Shared leading cells are
    listed once, like the network computes them once.
    """
    h, w = size
    if h % 32 or w % 32:
        from fasterseg.models.network import check_input_size

        check_input_size(h, w)
    out: list[tuple[str, Block]] = [("stem", b) for b in stem_blocks(arch.stem_ratio, size)]
    shared = arch.shared_prefix()
    last_channels = []
    for bi, branch in enumerate(arch.branches):
        c_in = arch.stem_channels
        ch = {8: arch.stem_channels}
        for i, cell in enumerate(branch.cells):
            if bi == 0 or i >= shared:
                out.append(("cells", Block(cell.op, h // cell.rate, w // cell.rate, c_in,
                                           cell.out_channels, stride=cell.stride)))
            c_in = cell.out_channels
            ch[cell.out_rate] = cell.out_channels
        last_channels.append(ch)
    for branch, ch in zip(arch.branches, last_channels):
        for b in aggregation_blocks(branch.cells[-1].out_channels, branch.output_rate,
                                    arch.head_ratio, ch, size):
            out.append(("aggregation", b))
    for b in decoder_blocks(arch.head_ratio, len(arch.branches), arch.num_classes, size):
        out.append(("decoder", b))
    return out
