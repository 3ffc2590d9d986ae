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
kept in fp32 one at a time, greedily: each step tries the next convolution from the output end
and the next from the input end (where quantization hurts most) and keeps the one that gains
more, until the floor or ``max_fallback`` is reached. ``info`` names them.
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
):
    """Quantize ``model`` to int8 for ``size`` and return a ``Predictor``.

    ``calib``: normalised ``[1, 3, H, W]`` images at ``size`` (``calibration_images``, train
    split). ``check``: other images (val split) on which the pixel agreement with the fp32 model
    is measured and the fp32 fallback chosen; None measures on ``calib`` (optimistic, said so in
    ``info``). ``keep_fp32``: ONNX node names to keep in fp32 (e.g. from a saved choice's
    ``info["fp32_nodes"]``); given, no automatic search runs. ``calib_info`` (from
    ``calibration_images``) is copied into ``info["calibration"]``. The caller's model is not
    changed. Every failure a user can fix is a one-line ``UserError``.
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
    return _quantize_ort(model, size, calib, threads=threads, check=check,
                         min_agreement=float(min_agreement), keep_fp32=keep_fp32,
                         max_fallback=int(max_fallback), calib_info=calib_info)


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


def _stride(n: int, most: int = 4) -> int:
    """The largest divisor of ``n`` up to ``most``: images per calibration chunk.

    (onnxruntime's ``CalibMaxIntermediateOutputs`` would bound memory too, but in 1.31 it drops
    the chunks instead of merging their ranges.)
    """
    return max(k for k in range(1, most + 1) if n % k == 0)


def _graph_facts(path: Path) -> tuple[list[str], list[str], set[str]]:
    """(Conv node names in graph order, Resize nodes that produce a graph output, all names)."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    final = [n.name for n in graph.node if n.op_type == "Resize" and set(n.output) & outputs]
    return convs, final, {n.name for n in graph.node}


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
) -> OrtInt8Predictor:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fasterseg.export.onnx import export_onnx

    t_start = time.perf_counter()
    net = copy.deepcopy(model).cpu().float().eval()
    vnni = has_vnni()
    reduce_range = not vnni
    on_calib = check is None
    probe = calib if on_calib else check
    if on_calib:
        logger.warning("int8: no check images; agreement is measured on the calibration images")
    with torch.inference_mode():
        reference = [net(x).argmax(1) for x in probe]

    with tempfile.TemporaryDirectory(prefix="fasterseg-int8-") as tmp:
        tmp = Path(tmp)
        export_onnx(net, tmp / "fp32.onnx", size, dynamic_batch=True)
        # ONNX's own shape inference is enough for this static graph (only the batch is free);
        # the symbolic one would import sympy, seconds for nothing
        quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
        convs, final, all_nodes = _graph_facts(tmp / "pre.onnx")
        forced = list(final)
        if keep_fp32 is not None:
            bad = [n for n in keep_fp32 if n not in all_nodes]
            if bad:
                raise UserError(f"keep_fp32: no node {bad[0]!r} in the exported graph "
                                f"(convolutions: {', '.join(convs[:3])}, ...)")
            forced = list(dict.fromkeys([*forced, *keep_fp32]))
        cache = tmp / "ranges.json"
        calls = {"n": 0}

        def build(exclude: list[str]) -> OrtInt8Predictor:
            out = tmp / f"int8_{calls['n']}.onnx"
            calls["n"] += 1
            quantize_static(
                str(tmp / "pre.onnx"), str(out), _Reader("image", calib),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude),
                calibration_cache_path=str(cache),
                # ranges merged every `stride` images: memory stays bounded at 1024x2048
                extra_options={"CalibStridedMinMax": _stride(len(calib))},
            )
            return OrtInt8Predictor(out.read_bytes(), size, threads, {})

        def score(pred: OrtInt8Predictor) -> float:
            return agreement(pred, probe, reference)

        excluded = list(forced)
        best = build(excluded)
        best_agree = score(best)
        steps: list[dict[str, Any]] = [{"fp32": list(excluded), "agreement": best_agree}]
        added: list[str] = []
        if keep_fp32 is None:
            from_out = [c for c in reversed(convs) if c not in excluded]
            from_in = [c for c in convs if c not in excluded]
            while best_agree < min_agreement and len(added) < max_fallback:
                tried = [c for c in (next((c for c in from_out if c not in added), None),
                                     next((c for c in from_in if c not in added), None)) if c]
                if not tried:
                    break
                results = []
                for cand in dict.fromkeys(tried):
                    pred = build([*excluded, cand])
                    results.append((score(pred), cand, pred))
                gain, cand, pred = max(results, key=lambda r: r[0])
                added.append(cand)
                excluded.append(cand)
                steps.append({"fp32": [cand], "agreement": gain,
                              "tried": {c: a for a, c, _ in results}})
                logger.info("int8: %s kept in fp32 -> agreement %.4f", cand, gain)
                if gain > best_agree:  # a step that gains nothing is kept only if a later one does
                    best, best_agree = pred, gain
            best_nodes = _nodes_of(steps, best_agree)
        else:
            best_nodes = excluded
        reached = best_agree >= min_agreement
        if not reached:
            logger.warning("int8: agreement with fp32 %.4f stays under the floor %.4f after "
                           "%d fp32 fallbacks", best_agree, min_agreement, len(added))
    best.info = {
        "method": "onnxruntime",
        "engine": f"onnxruntime {ort.__version__}",
        "format": "QDQ",
        "weights": "int8 per-channel symmetric" + (" (7-bit, no VNNI)" if reduce_range else ""),
        "activations": "uint8 per-tensor, min/max calibrated",
        "reduce_range": reduce_range,
        "vnni": vnni,
        "threads": threads,
        "calibration": {**(calib_info or {}), "images": len(calib)},
        "agreement": best_agree,
        "agreement_on": "calibration" if on_calib else "check",
        "check_images": len(probe),
        "min_agreement": min_agreement,
        "reached": reached,
        "fp32_nodes": best_nodes,
        "fallback": [n for n in best_nodes if n not in forced],
        "fallback_steps": steps,
        "int8_convs": len([c for c in convs if c not in best_nodes]),
        "convs": len(convs),
        "quantize_s": time.perf_counter() - t_start,
    }
    return best


def _nodes_of(steps: list[dict[str, Any]], target: float) -> list[str]:
    """fp32 nodes of the first step that reached ``target`` agreement (the model returned)."""
    nodes: list[str] = []
    for step in steps:
        nodes.extend(step["fp32"])
        if step["agreement"] >= target:
            return nodes
    return nodes
