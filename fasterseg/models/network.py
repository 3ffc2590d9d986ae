"""The derived FasterSeg network, built from an architecture file (facts section 8).

Layout: stem (to 1/8) -> branches of sequential cells (leading cells shared between branches are
one module, computed once) -> per-branch aggregation back to 1/8 (1x1 "arm", bilinear up, concat
with the branch's last feature at that rate, 3x3 "refine") -> concat of branches -> feature fusion
-> head -> bilinear x8 (or, with the optional detail head, a 1/4-resolution correction of the
logits from the stem's 1/4 feature, then bilinear x4). In training mode auxiliary heads on the 1/16 and 1/32 features add deep
supervision; they are built always (so checkpoints are complete) but run only in training.
"""

from __future__ import annotations

import torch
from torch import nn

from fasterseg.arch.schema import Arch
from fasterseg.errors import UserError
from fasterseg.search_space.operators import (
    ConvNorm,
    FeatureFusion,
    Head,
    build_operator,
    init_weights,
    resize,
)

STRIDE = 32  # total downsampling of the deepest branch: inputs must be multiples of this
# zoomed convolutions halve the 1/32 features, which needs 2 pixels there: the smallest input
MIN_SIZE = 2 * STRIDE


def check_input_size(h: int, w: int, stride: int = STRIDE, min_size: int = MIN_SIZE) -> None:
    """Raise a one-line ``UserError`` naming the nearest valid sizes if H or W is below
    ``min_size`` (64) or not a multiple of ``stride`` (32)."""

    def near(v: int) -> str:
        lo, hi = (v // stride) * stride, (v // stride + 1) * stride
        return f"{lo} or {hi}" if lo >= min_size else f"{max(hi, min_size)}"

    dims = (("height", h), ("width", w))
    bad = [(n, v) for n, v in dims if v < min_size or v % stride]
    if not bad:
        return
    parts = ", ".join(f"{n} {v} (nearest valid: {near(v)})" for n, v in bad)
    if any(v < min_size for _, v in bad):
        why = f"is too small: {parts}"
    else:
        why = f"is not divisible by {stride}: {parts}"
    raise UserError(
        f"input size {h}x{w} {why}; height and width must be multiples of {stride}, at least "
        f"{min_size}; resize or pad the input (fasterseg eval/predict pad automatically)"
    )


def build_stem(stem_ratio: int) -> nn.Sequential:
    """Five 3x3 convs with strides 2,2,1,2,1 down to 1/8: 3 -> 4chi -> 8chi (x2) -> 8chi (x2)."""
    c1, c2 = 4 * stem_ratio, 8 * stem_ratio
    return nn.Sequential(
        ConvNorm(3, c1, 3, stride=2),
        build_operator("conv_x2", c1, c2, stride=2),
        build_operator("conv_x2", c2, c2, stride=2),
    )


class BranchAggregator(nn.Module):
    """Bring one branch's final feature back to 1/8: per rate step arm 1x1, up, concat, refine 3x3.

    ``skip_channels`` are the channels of the branch's last feature at each rate it climbs to
    (1/16 then 1/8 for a 1/32 branch); the output has ``8 * head_ratio`` channels.
    """

    def __init__(self, c_in: int, out_rate: int, head_ratio: int, skip_channels: dict[int, int]):
        super().__init__()
        self.arms = nn.ModuleList()
        self.refines = nn.ModuleList()
        self.rates = []
        c, rate = c_in, out_rate
        while rate > 8:
            target = rate // 2
            c_mid = target * head_ratio
            self.arms.append(ConvNorm(c, c_mid, 1))
            self.refines.append(ConvNorm(c_mid + skip_channels[target], c_mid, 3))
            self.rates.append(target)
            c, rate = c_mid, target
        self.out_channels = c

    def forward(self, x: torch.Tensor, feats: dict[int, torch.Tensor]) -> torch.Tensor:
        for arm, refine, rate in zip(self.arms, self.refines, self.rates):
            skip = feats[rate]
            x = resize(arm(x), skip.shape[-2:])
            x = refine(torch.cat([x, skip], dim=1))
        return x


class DetailHead(nn.Module):
    """Logit correction at 1/4 (or 1/2) of the input, for classes too thin for the 1/8 head (poles).

    The stem's 1/4 (or 1/2) feature and the head's 1/8 feature are each projected (1x1) to ``channels``,
    the 1/8 one upsampled, both concatenated and fused by a depthwise-separable 3x3 conv; a 1x1
    classifier adds its output to the upsampled 1/8 logits. Depthwise-separable keeps the cost
    at 1.5 % of the CamVid student's MACs at 16 channels (3.5 % at 32).
    """

    def __init__(self, c_fine: int, c_coarse: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fine = ConvNorm(c_fine, channels, 1)
        self.coarse = ConvNorm(c_coarse, channels, 1)
        c2 = 2 * channels
        self.depthwise = nn.Sequential(nn.Conv2d(c2, c2, 3, 1, 1, groups=c2, bias=False),
                                       nn.BatchNorm2d(c2))
        self.pointwise = ConvNorm(c2, channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=True)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        size = fine.shape[-2:]
        x = torch.cat([self.fine(fine), resize(self.coarse(coarse), size)], dim=1)
        x = self.pointwise(self.depthwise(x))
        return resize(logits, size) + self.classifier(x)


class FasterSegNet(nn.Module):
    """A derived FasterSeg network; ``model.arch`` is the architecture it was built from."""

    def __init__(self, arch: Arch, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes is not None and num_classes != arch.num_classes:
            arch = arch.with_num_classes(num_classes)
        self.arch = arch
        self.num_classes = arch.num_classes
        self.stem = build_stem(arch.stem_ratio)

        # Unique cells; branch_plan[b][i] indexes self.cells (shared prefix -> same index).
        self.cells = nn.ModuleList()
        self.branch_plan: list[list[int]] = []
        shared = arch.shared_prefix()
        for b, branch in enumerate(arch.branches):
            plan, c_in = [], arch.stem_channels
            for i, cell in enumerate(branch.cells):
                if b > 0 and i < shared:
                    plan.append(self.branch_plan[0][i])
                else:
                    self.cells.append(build_operator(cell.op, c_in, cell.out_channels, cell.stride))
                    plan.append(len(self.cells) - 1)
                c_in = cell.out_channels
            self.branch_plan.append(plan)

        # Channels of each branch's last feature per rate (the stem counts as rate 8).
        self._last_channels = []
        for branch in arch.branches:
            ch = {8: arch.stem_channels}
            for cell in branch.cells:
                ch[cell.out_rate] = cell.out_channels
            self._last_channels.append(ch)

        self.aggregators = nn.ModuleList(
            BranchAggregator(br.cells[-1].out_channels, br.output_rate, arch.head_ratio, ch)
            for br, ch in zip(arch.branches, self._last_channels)
        )
        fused = sum(a.out_channels for a in self.aggregators)
        self.fusion = FeatureFusion(fused)
        self.head = Head(fused, self.num_classes)
        self.detail = None
        if arch.detail_channels:
            fine = self.stem[1].c_out if arch.detail_rate == 4 else self.stem[0].c_out
            self.detail = DetailHead(fine, self.head.conv.c_out,
                                     arch.detail_channels, self.num_classes)

        # Deep supervision on the concatenated 1/16 and 1/32 features of the branches.
        self.aux_rates = [r for r in (16, 32) if any(r in ch for ch in self._last_channels)]
        self.aux_heads = nn.ModuleDict()
        for r in self.aux_rates:
            c = sum(ch[r] for ch in self._aux_order_channels(r))
            self.aux_heads[str(r)] = Head(c, self.num_classes)
        self.reset_parameters()

    def _aux_order(self) -> list[int]:
        # Branches sorted by output rate so a 1/16 branch's own output comes before a 1/32
        # branch's intermediate 1/16 feature (the authors' concat order).
        return sorted(range(len(self.arch.branches)), key=lambda b: self.arch.branches[b].output_rate)

    def _aux_order_channels(self, rate: int) -> list[dict[int, int]]:
        return [self._last_channels[b] for b in self._aux_order() if rate in self._last_channels[b]]

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_in, ReLU) convs, BN weight 1 / bias 0, zero conv biases."""
        init_weights(self)

    def branch_cells(self, b: int) -> list[nn.Module]:
        """The cell modules of branch ``b`` in order (shared cells are the same objects)."""
        return [self.cells[i] for i in self.branch_plan[b]]

    def features(self, x: torch.Tensor) -> list[dict[int, torch.Tensor]]:
        """Run stem and cells; per branch, the last feature at every rate it passes through."""
        half = self.stem[0](x)
        quarter = self.stem[1](half)
        stem = self.stem[2](quarter)
        fine = half if self.arch.detail_rate == 2 else quarter
        cache: dict[int, torch.Tensor] = {}
        out = []
        for b, branch in enumerate(self.arch.branches):
            feats = {self.arch.detail_rate: fine, 8: stem} if self.detail is not None else {8: stem}
            h = stem
            for cell, idx in zip(branch.cells, self.branch_plan[b]):
                if idx not in cache:
                    cache[idx] = self.cells[idx](h)
                h = cache[idx]
                feats[cell.out_rate] = h
            out.append(feats)
        return out

    def head_logits(self, feats: list[dict[int, torch.Tensor]]) -> torch.Tensor:
        """Logits at 1/8 of the input (1/4 or 1/2 with the detail head) from ``features(x)``, before the
        final bilinear resize (low-precision deployment paths run up to here in bf16/fp16, then
        resize in fp32)."""
        fused = torch.cat(
            [agg(f[br.output_rate], f) for agg, f, br in zip(self.aggregators, feats, self.arch.branches)],
            dim=1,
        )
        if self.detail is None:
            return self.head(self.fusion(fused))
        h = self.head.conv(self.fusion(fused))
        return self.detail(feats[0][self.arch.detail_rate], h, self.head.classifier(h))

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        check_input_size(h, w)
        feats = self.features(x)
        logits = resize(self.head_logits(feats), (h, w))
        if not self.training:
            return logits
        aux = []
        for r in self.aux_rates:
            f = torch.cat([feats[b][r] for b in self._aux_order() if r in feats[b]], dim=1)
            aux.append(resize(self.aux_heads[str(r)](f), (h, w)))
        return (logits, *aux)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class-index map ``[B, H, W]`` in eval mode (restores the previous mode)."""
        was = self.training
        self.eval()
        try:
            return self(x).argmax(1)
        finally:
            self.train(was)
