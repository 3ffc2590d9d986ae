"""Static int8 post-training quantization of a derived FasterSeg network, on the user's images.

Engine: **onnxruntime static quantization** (``quantize_static``, QDQ format, per-channel
symmetric int8 weights, uint8 activations calibrated by min/max on real images). Why this one
(measured on a CamVid-trained searched student, 384x480, calibrated on 32 CamVid train images,
agreement with fp32 on the 101 CamVid val images; numbers and CPU in docs/int8.md and
benchmarks/results/int8_engines.json):

- it is the maintained, documented path of an engine the project already depends on, and its
  artifact is a plain ``.onnx`` file that any onnxruntime (C++, C#, Java, mobile) runs;
- on this AVX2 CPU without VNNI it is the fastest int8 path measured, ahead of onnxruntime fp32
  and fp32 eager; torchao's PT2E (X86InductorQuantizer + inductor) needs a C++ compile of tens of
  seconds to minutes at every start, and ``torch.ao.quantization`` is deprecated;
- with 7-bit weights (``reduce_range``) on CPUs without VNNI, the final bilinear upsample kept
  in fp32 and the automatic per-node fp32 fallback, it reaches the 99.5 % agreement floor.

Lessons kept from the removed torch.ao path (FX graph mode): the final x8 upsample stays
fp32 (it turns 1/8 logits into the output, where int8 rounding flips near-tie pixels); the
concat inputs keep their own scales (onnxruntime requantizes each input to the output scale).
Not kept: the per-class logit bias correction, which gave nothing here (-0.02 to +0.02 points).

Without VNNI, x86 int8 kernels multiply uint8 x int8 pairs into a saturating int16
(``vpmaddubsw``): full 8-bit weights then lose 3-4 points of agreement (96.3 %), so weights use
7 bits there (``reduce_range``), as onnxruntime recommends; with VNNI they use all 8.

Fallback: when agreement with fp32 on ``check`` is under ``min_agreement``, convolutions are
kept in fp32 by ``fasterseg.deploy.fallback.search``: each is scored once alone in fp32, then
they are added by agreement gained per MAC kept in fp32 until the floor or ``max_fallback``.
Every build after the first reuses the calibrated ranges (onnxruntime's calibration cache), so a
try costs a graph rewrite and a session, not a calibration. ``info`` names them.

Calibration: ``minmax`` (default), ``percentile`` (histogram, 99.999 % by default) or
``entropy``, all through onnxruntime's calibrators in strided chunks (memory bounded at
1024x2048); numbers in docs/int8.md.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["OrtInt8Predictor", "agreement", "int8_methods", "quantize_int8"]

METHODS = ("onnxruntime",)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_PERCENTILE = 99.999
DEFAULT_CALIBRATION = "minmax"
# rank the fp32 fallback candidates by agreement gained per MAC kept in fp32 (else by gain)
FALLBACK_COST = True


def _ort_quantization() -> bool:
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_static  # noqa: F401
    except ImportError:
        return False
    return True


def int8_methods() -> list[str]:
    """The maintained int8 engines usable here, best first (empty when none is installed)."""
    return ["onnxruntime"] if _ort_quantization() else []


def has_vnni() -> bool:
    """Whether this CPU has a non-saturating int8 dot product (AVX512-VNNI or AVX-VNNI)."""
    from fasterseg.utils.environment import cpu_flags

    return any(f in cpu_flags() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def agreement(
    predict: Callable[[torch.Tensor], torch.Tensor], images: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
) -> float:
    """Share of pixels whose argmax class equals ``reference`` (fp32 class maps), all images."""
    same = total = 0
    for x, ref in zip(images, reference):
        pred = predict(x).argmax(1)
        same += int((pred == ref).sum())
        total += ref.numel()
    return same / max(total, 1)


class OrtInt8Predictor:
    """A quantized ONNX model run by onnxruntime on the CPU (``Predictor`` protocol)."""

    name = "int8-ort"
    backend = "onnxruntime"
    dtype = "int8"

    def __init__(self, onnx_bytes: bytes, size: tuple[int, int], threads: int | None,
                 info: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.size = (int(size[0]), int(size[1]))
        self.info = info
        self._bytes = onnx_bytes
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        self._session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise UserError(f"this int8 model was calibrated for {self.size[0]}x{self.size[1]}, "
                            f"got {x.shape[-2]}x{x.shape[-1]}")
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        (out,) = self._session.run(None, {self._input: arr})
        return torch.from_numpy(out)

    def save(self, path: str | Path) -> Path:
        """Write the quantized model (``.onnx``; another suffix is replaced by it)."""
        from fasterseg.utils.io import atomic_write

        path = Path(path)
        if path.suffix.lower() != ".onnx":
            path = path.with_suffix(".onnx")
        return atomic_write(path, lambda f: f.write(self._bytes), mode="wb")


def _check_images(images: Sequence[torch.Tensor], size: tuple[int, int], what: str) -> None:
    for im in images:
        if im.dim() != 4 or im.shape[1] != 3 or tuple(im.shape[-2:]) != tuple(size):
            raise UserError(f"{what} image of shape {tuple(im.shape)} does not match "
                            f"[B, 3, {size[0]}, {size[1]}]")


def quantize_int8(
    model: nn.Module,
    size: tuple[int, int],
    calib: list[torch.Tensor],
    *,
    method: str = "auto",
    threads: int | None = None,
    check: list[torch.Tensor] | None = None,
    min_agreement: float = 0.995,
    keep_fp32: Sequence[str] | None = None,
    max_fallback: int = 8,
    calib_info: dict[str, Any] | None = None,
    calibration: str = DEFAULT_CALIBRATION,
):
    """Quantize ``model`` to int8 for ``size`` and return a ``Predictor``.

    ``calib``: normalised ``[1, 3, H, W]`` images at ``size`` (``calibration_images``, train
    split). ``check``: other images (val split) on which the pixel agreement with the fp32 model
    is measured and the fp32 fallback chosen; None measures on ``calib`` (optimistic, said so in
    ``info``). ``keep_fp32``: ONNX node names to keep in fp32 (e.g. from a saved choice's
    ``info["fp32_nodes"]``); given, no automatic search runs. ``calib_info`` (from
    ``calibration_images``) is copied into ``info["calibration"]``. The caller's model is not
    changed. ``calibration``: how activation ranges are set from ``calib`` (``minmax``,
    ``percentile`` (99.999, or ``percentile:P``) or ``entropy``; see the module docstring).
    Every failure a user can fix is a one-line ``UserError``.
    """
    available = int8_methods()
    if method == "auto":
        if not available:
            raise UserError("int8 needs onnxruntime: pip install onnxruntime")
        method = available[0]
    if method not in METHODS:
        raise UserError(f"unknown int8 method {method!r} (choose from auto, {', '.join(METHODS)})")
    if method not in available:
        raise UserError(f"int8 method {method!r} is not installed here: pip install onnxruntime")
    size = (int(size[0]), int(size[1]))
    if not calib:
        raise UserError("int8 calibration needs at least one image")
    _check_images(calib, size, "calibration")
    if check is not None:
        _check_images(check, size, "check")
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise UserError(f"min_agreement must be within 0..1, got {min_agreement}")
    _calibration(calibration)
    return _quantize_ort(model, size, calib, threads=threads, check=check,
                         min_agreement=float(min_agreement), keep_fp32=keep_fp32,
                         max_fallback=int(max_fallback), calib_info=calib_info,
                         calibration=calibration)


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over a list of tensors."""

    def __init__(self, name: str, images: Sequence[torch.Tensor]) -> None:
        self.name, self.images, self.i, self.end = name, list(images), 0, len(images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, min(end_index, len(self.images))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        x = self.images[self.i]
        self.i += 1
        return {self.name: np.ascontiguousarray(x.detach().cpu().float().numpy())}

    def __len__(self) -> int:
        return len(self.images)


def _calibration(spec: str) -> tuple[Any, dict[str, Any]]:
    """``minmax``, ``entropy``, ``percentile`` or ``percentile:P`` -> (onnxruntime
    ``CalibrationMethod``, its extra options). One-line ``UserError`` for anything else."""
    from onnxruntime.quantization import CalibrationMethod

    name, _, arg = spec.partition(":")
    if name == "percentile":
        try:
            p = float(arg or DEFAULT_PERCENTILE)
        except ValueError:
            p = -1.0
        if not 50.0 < p <= 100.0:
            raise UserError(f"int8 calibration {spec!r}: the percentile must be in (50, 100]")
        return CalibrationMethod.Percentile, {"CalibPercentile": p}
    if name in ("minmax", "entropy") and not arg:
        return getattr(CalibrationMethod, "MinMax" if name == "minmax" else "Entropy"), {}
    raise UserError(f"unknown int8 calibration {spec!r} (choose from "
                    f"{', '.join(CALIBRATION_METHODS)}, percentile:P)")


def _stride(n: int, most: int = 4) -> int:
    """The largest divisor of ``n`` up to ``most``: images per calibration chunk.

    (onnxruntime's ``CalibMaxIntermediateOutputs`` would bound memory too, but in 1.31 it drops
    the chunks instead of merging their ranges.)
    """
    return max(k for k in range(1, most + 1) if n % k == 0)


def _graph_facts(path: Path) -> tuple[list[str], list[str], set[str], dict[str, int]]:
    """(Conv node names in graph order, Resize nodes that produce a graph output, all names,
    MACs per image of each Conv: what keeping it in fp32 costs, roughly)."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    final = [n.name for n in graph.node if n.op_type == "Resize" and set(n.output) & outputs]
    weights = {t.name: list(t.dims) for t in graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.output]}
    macs: dict[str, int] = {}
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        w, out = weights.get(n.input[1]), shapes.get(n.output[0])
        if w and out and all(d > 0 for d in out[2:]):
            macs[n.name] = int(np.prod(w)) * int(np.prod(out[2:]))
    return convs, final, {n.name for n in graph.node}, macs


def _module_macs(net: nn.Module, size: tuple[int, int]) -> dict[str, int]:
    """MACs per image of every ``nn.Conv2d`` of ``net`` (by module name), from one forward."""
    macs: dict[str, int] = {}
    hooks = []
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d):
            def hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor, name: str = name) -> None:
                k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                macs[name] = int(out[0].numel()) * k
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, *size))
    finally:
        for h in hooks:
            h.remove()
    return macs


class _OrtBuilder:
    """The exported, pre-processed fp32 graph in ``tmp`` and its calibration cache: ``build``
    quantizes it again with some nodes left in fp32, without running the calibration again
    (the ranges are cached after the first build), so the fallback search costs one
    calibration plus one graph rewrite and session per try."""

    def __init__(self, net: nn.Module, size: tuple[int, int], calib: Sequence[torch.Tensor],
                 tmp: Path, *, calibration: str, threads: int | None, reduce_range: bool) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from fasterseg.export.onnx import export_onnx

        self.size, self.calib, self.tmp, self.threads = size, list(calib), tmp, threads
        self.calibration, self.reduce_range = calibration, reduce_range
        export_onnx(net, tmp / "fp32.onnx", size, dynamic_batch=True)
        # ONNX's own shape inference is enough for this static graph (only the batch is free);
        # the symbolic one would import sympy, seconds for nothing
        quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
        self.convs, self.final, self.nodes, self.macs = _graph_facts(tmp / "pre.onnx")
        # ONNX shape inference loses the spatial sizes after some resizes: count the rest on
        # the PyTorch module (the export names node /a.0/b/Conv after module a.0.b)
        torch_macs = _module_macs(net, size)
        for c in self.convs:
            key = c.strip("/").removesuffix("/Conv").replace("/", ".")
            self.macs.setdefault(c, torch_macs.get(key, 0))
        self.macs = {c: m for c, m in self.macs.items() if m > 0}
        self.cache = tmp / f"ranges-{calibration.replace(':', '-')}.json"
        self.builds = 0

    def build(self, exclude: Sequence[str]) -> OrtInt8Predictor:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        out = self.tmp / f"int8_{self.builds}.onnx"
        self.builds += 1
        method, extra = _calibration(self.calibration)
        histogram = not self.calibration.startswith("minmax")
        quantize_static(
            str(self.tmp / "pre.onnx"), str(out), _Reader("image", self.calib),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, nodes_to_exclude=list(exclude),
            calibration_cache_path=str(self.cache),
            # ranges (or histograms) merged every `stride` images: memory stays bounded at
            # 1024x2048; a histogram method copies each chunk's tensors twice more, so its
            # chunks are smaller
            extra_options={**extra,
                           "CalibStridedMinMax": _stride(len(self.calib), 2 if histogram else 4)},
        )
        pred = OrtInt8Predictor(out.read_bytes(), self.size, self.threads, {})
        out.unlink()
        return pred


def _quantize_ort(
    model: nn.Module,
    size: tuple[int, int],
    calib: list[torch.Tensor],
    *,
    threads: int | None,
    check: list[torch.Tensor] | None,
    min_agreement: float,
    keep_fp32: Sequence[str] | None,
    max_fallback: int,
    calib_info: dict[str, Any] | None,
    calibration: str,
) -> OrtInt8Predictor:
    import onnxruntime as ort

    from fasterseg.deploy import fallback

    t_start = time.perf_counter()
    net = copy.deepcopy(model).cpu().float().eval()
    vnni = has_vnni()
    reduce_range = not vnni
    on_calib = check is None
    probe = calib if on_calib else check
    if on_calib and keep_fp32 is None:  # a saved choice's layers: nothing is decided here
        logger.warning("int8: no check images; agreement is measured on the calibration images")
    with torch.inference_mode():
        reference = [net(x).argmax(1) for x in probe]

    with tempfile.TemporaryDirectory(prefix="fasterseg-int8-") as tmp:
        builder = _OrtBuilder(net, size, calib, Path(tmp), calibration=calibration,
                              threads=threads, reduce_range=reduce_range)
        convs = builder.convs
        forced = list(builder.final)
        if keep_fp32 is not None:
            bad = [n for n in keep_fp32 if n not in builder.nodes]
            if bad:
                raise UserError(f"keep_fp32: no node {bad[0]!r} in the exported graph "
                                f"(convolutions: {', '.join(convs[:3])}, ...)")
            forced = list(dict.fromkeys([*forced, *keep_fp32]))

        def build(exclude: list[str]) -> tuple[float, OrtInt8Predictor]:
            pred = builder.build(exclude)
            return agreement(pred, probe, reference), pred

        found = fallback.search(build, convs, floor=None if keep_fp32 is not None else
                                min_agreement, forced=forced, max_fallback=max_fallback,
                                cost=builder.macs if FALLBACK_COST else None, what="int8")
        reached = found.agreement >= min_agreement
        if not reached and keep_fp32 is None:
            logger.warning("int8: agreement with fp32 %.4f stays under the floor %.4f after "
                           "%d fp32 fallbacks", found.agreement, min_agreement, len(found.kept))
    best = found.model
    best.info = {
        "method": "onnxruntime",
        "engine": f"onnxruntime {ort.__version__}",
        "format": "QDQ",
        "weights": "int8 per-channel symmetric" + (" (7-bit, no VNNI)" if reduce_range else ""),
        "activations": f"uint8 per-tensor, {calibration} calibrated",
        "calibration_method": calibration,
        "reduce_range": reduce_range,
        "vnni": vnni,
        "threads": threads,
        "calibration": {**(calib_info or {}), "images": len(calib)},
        "agreement": found.agreement,
        "agreement_on": "calibration" if on_calib else "check",
        "check_images": len(probe),
        "min_agreement": min_agreement,
        "reached": reached,
        "fp32_nodes": found.fp32,
        "fallback": found.kept,
        "fallback_steps": found.steps,
        "fallback_rank": "gain per MAC" if FALLBACK_COST else "gain",
        "sensitivity": found.sensitivity,
        "builds": builder.builds,
        "fp32_macs": sum(builder.macs.get(n, 0) for n in found.fp32),
        "macs": sum(builder.macs.values()),
        "int8_convs": len([c for c in convs if c not in found.fp32]),
        "convs": len(convs),
        "quantize_s": time.perf_counter() - t_start,
    }
    return best
