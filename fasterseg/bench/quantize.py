"""Static post-training int8 quantization of a derived FasterSeg network for CPU inference.

Why: on a CPU with AVX512-VNNI an int8 convolution does ~4x the work of an fp32 one per cycle,
and convolutions are most of a FasterSeg inference. How (FX graph mode, no model edits):

1. fold BatchNorm into the convs (``fasterseg.bench.fuse``) and trace everything up to the
   head's 1/8-resolution logits (stem, cells, aggregators, fusion, head) for ONE input size; the
   bilinear resizes get their concrete output sizes, so the graph holds no shape arithmetic;
2. ``prepare_fx`` with the x86 qconfig (per-channel symmetric int8 weights, histogram-observed
   uint8 activations), calibrate on a few realistic images, ``convert_fx``;
3. the int8 part ends with a dequantize; the final bilinear x8 upsample stays fp32 (and so does
   any argmax the caller takes), so the output is the same fp32 ``[B, C, H, W]`` logits.

The quantized model is specialised to the calibration size: other sizes raise ``ValueError``.
"""

from __future__ import annotations

import copy
import logging
import operator
import warnings
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from fasterseg.search_space import operators as ops

logger = logging.getLogger(__name__)

__all__ = ["QuantizedFasterSeg", "calibration_images", "int8_available", "quantize_int8"]

ENGINES = ("x86", "onednn", "fbgemm")


def int8_available() -> str | None:
    """The quantized CPU engine to use (``x86`` preferred), or None when there is none."""
    supported = torch.backends.quantized.supported_engines
    return next((e for e in ENGINES if e in supported), None)


class FloatCat(nn.Module):
    """``torch.cat`` that the quantizer leaves in fp32 (a non-traceable leaf module).

    A quantized ``torch.cat`` requantizes every input to the FIRST input's scale, and the
    branches concatenated here have different ranges (a small one first would clip the rest).
    As an unknown op this gets dequantized inputs; the consumer's own observer requantizes the
    result. Cheap: every concat runs at 1/8 or 1/16 resolution.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, self.dim)


def _has_vnni() -> bool:
    try:
        return bool(torch.cpu._is_vnni_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


class _Trunk(nn.Module):
    """Stem -> cells -> aggregators -> fusion -> head of a ``FasterSegNet`` (1/8 logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        feats = net.features(x)
        fused = torch.cat(
            [agg(f[br.output_rate], f)
             for agg, f, br in zip(net.aggregators, feats, net.arch.branches)],
            dim=1,
        )
        return net.head(net.fusion(fused))


class _ConvLeafTracer(fx.Tracer):
    """Every ``nn.Conv2d`` (superkernel subclasses included) is a leaf call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """An ``nn.Conv2d`` (exact type, which the quantizer matches) with ``conv``'s weights."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode)
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


def trace_trunk(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """Trace the BN-folded trunk at ``example``'s size into a static, quantizable FX graph.

    ``resize`` is traced as a leaf, then replaced by ``F.interpolate`` with the concrete size a
    shape propagation found; ``Identity`` (folded BN) nodes are dropped and the superkernel convs
    (``SlimConv2d``, called with an extra width argument) become plain ``nn.Conv2d`` calls;
    concatenations become ``FloatCat`` modules.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    from fasterseg.bench.fuse import fuse_conv_bn

    trunk = _Trunk(fuse_conv_bn(model)).eval()
    tracer = _ConvLeafTracer(autowrap_functions=(ops.resize,))
    graph = tracer.trace(trunk)
    gm = fx.GraphModule(tracer.root, graph)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    cats = []
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is ops.resize:
            size = tuple(node.meta["tensor_meta"].shape[-2:])
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(
                    F.interpolate, (node.args[0],),
                    {"size": size, "mode": "bilinear", "align_corners": True})
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        elif node.op == "call_function" and node.target is torch.cat:
            cats.append(node)
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, nn.Identity):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
            elif isinstance(mod, nn.Conv2d):
                if len(node.args) > 1 and node.args[1] is not None:
                    raise ValueError(f"{node.target}: sliced superkernel convs are not supported")
                node.args = node.args[:1]
                node.kwargs = {}
                if type(mod) is not nn.Conv2d:
                    parent, _, name = node.target.rpartition(".")
                    setattr(gm.get_submodule(parent), name, _plain_conv(mod))
    for k, node in enumerate(cats):
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        gm.add_submodule(f"float_cat_{k}", FloatCat(dim))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(f"float_cat_{k}", (tensors,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    _check_static(gm)
    return gm


def _check_static(gm: fx.GraphModule) -> None:
    """Fail loudly if shape arithmetic survived (the quantizer would dequantize around it)."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (getattr, operator.floordiv):
            raise ValueError(f"unexpected dynamic-shape node {node.name} in the traced trunk")


class QuantizedFasterSeg(nn.Module):
    """int8 trunk (quantize -> ... -> dequantize at 1/8) + fp32 bilinear x8 to the input size."""

    def __init__(self, trunk: nn.Module, size: Sequence[int], channels_last: bool = True) -> None:
        super().__init__()
        self.trunk = trunk
        self.size = (int(size[0]), int(size[1]))
        self.channels_last = channels_last
        # per-class fp32 offset added to the 1/8 logits (bias correction; None = off). Adding it
        # before the bilinear resize equals adding it after (the resize weights sum to 1).
        self.logit_offset: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"this int8 model was calibrated for {self.size[0]}x{self.size[1]}, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.trunk(x)
        if self.logit_offset is not None:
            out = out + self.logit_offset.view(1, -1, 1, 1)
        return ops.resize(out, self.size)


def calibration_images(
    size: Sequence[int], n: int = 4, seed: int = 0, split: str = "train"
) -> list[torch.Tensor]:
    """``n`` generated street scenes at ``size``, normalised like training (``[1, 3, H, W]``).

    Calibrate on ``train`` scenes and measure agreement on ``val`` ones (never the same image).
    """
    from fasterseg.data.synthetic import generate_scene
    from fasterseg.data.transforms import normalize

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = []
    for i in range(n):
        image, _ = generate_scene(seed, split, i, tuple(size))
        out.append(normalize(image, mean, std)[None])
    return out


@torch.no_grad()
def quantize_int8(
    model: nn.Module,
    size: Sequence[int],
    calibration: Iterable[torch.Tensor] | None = None,
    engine: str | None = None,
    keep_fp32: Sequence[str] = (),
    reduce_range: bool | None = None,
    channels_last: bool = True,
    observer: str = "histogram",
    bias_correction: bool = True,
) -> QuantizedFasterSeg:
    """Static post-training int8 quantization of a derived ``FasterSegNet`` at ``size``.

    ``calibration``: normalised ``[1, 3, H, W]`` images at ``size`` (default: 4 generated street
    scenes). ``keep_fp32``: trunk module names left in fp32 (e.g. ``net.stem.0.conv``, the first
    conv, or ``net.head.classifier``). ``reduce_range`` (7-bit activations, which avoids int16
    overflow on CPUs without VNNI) defaults to True only when the CPU lacks VNNI.
    ``observer``: how activation ranges are calibrated, ``histogram`` (the range minimising the
    L2 quantization error over the calibration histogram) or ``minmax`` (the full observed range).
    ``bias_correction``: add to the int8 logits the per-class mean of (fp32 - int8) logits over
    the calibration images, removing the systematic shift quantization puts between near-tie
    classes (free at inference: one add at 1/8 resolution; +0.33 points of agreement with fp32
    on a CamVid student). Raises ``RuntimeError`` when no quantized CPU engine exists. The
    caller's model is untouched.
    """
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        QConfig,
        QConfigMapping,
        default_per_channel_weight_observer,
    )
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    observers = {"histogram": HistogramObserver, "minmax": MinMaxObserver}
    if observer not in observers:
        raise ValueError(f"observer must be one of {sorted(observers)}, got {observer!r}")
    engine = engine or int8_available()
    if engine is None or engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"no quantized CPU engine {engine or ''} in this torch build")
    torch.backends.quantized.engine = engine
    images = list(calibration) if calibration is not None else calibration_images(size)
    if not images:
        raise ValueError("calibration needs at least one image")
    for im in images:
        if tuple(im.shape[-2:]) != tuple(size):
            raise ValueError(f"calibration image {tuple(im.shape)} does not match size {size}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).eval().float()
    reference = copy.deepcopy(model) if bias_correction else None  # tracing edits `model`
    gm = trace_trunk(model, images[0])
    modules = dict(gm.named_modules())
    for name in keep_fp32:
        if name not in modules:
            raise ValueError(f"keep_fp32: no module {name!r} in the traced network")
    if reduce_range is None:
        reduce_range = not _has_vnni()
    qconfig = QConfig(activation=observers[observer].with_args(reduce_range=reduce_range),
                      weight=default_per_channel_weight_observer)
    qmap = QConfigMapping().set_global(qconfig)
    for name in keep_fp32:
        qmap = qmap.set_module_name(name, None)
    if channels_last:
        gm = gm.to(memory_format=torch.channels_last)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([FloatCat])
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (not a dependency here), and the
        # observers warn about reduce_range's future spelling: noise for a benchmark user.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        prepared = prepare_fx(gm, qmap, (images[0],), prepare_custom_config=custom)
        for im in images:
            prepared(im.contiguous(memory_format=fmt))
        trunk = convert_fx(prepared)
    logger.debug("int8 trunk:\n%s", trunk.code)
    qmodel = QuantizedFasterSeg(trunk, size, channels_last).eval()
    if reference is not None:
        diffs = [(reference(im) - qmodel(im)).mean((0, 2, 3)) for im in images]
        qmodel.logit_offset = torch.stack(diffs).mean(0)
    return qmodel
