"""OpenVINO as an optional inference back end: fp32, bf16 and int8 (NNCF), and IR export.

Many deployment users already run OpenVINO on their CPUs, so a FasterSeg network is converted
once (``openvino.convert_model`` on the PyTorch module, traced at a fixed input size) and
compiled for the CPU with the latency hint:

- ``fp32``: the converted model as is (inference precision forced to f32, so the CPU plugin never
  lowers it on its own);
- ``bf16``: the same model with ``INFERENCE_PRECISION_HINT=bf16``. On a CPU without native bf16
  (AVX-512 BF16 / AMX) the plugin does not emulate bf16: it runs f32. ``info`` reports the
  precision the compiled model actually runs (``inference_precision``) and the CPU's own list
  (``cpu_capabilities``), so a bf16 request that ran f32 is visible;
- ``int8``: NNCF post-training quantization (``nncf.quantize``, no bias correction: see
  ``quantize_nncf``) of the converted model on the given calibration images (real images of
  the model's dataset, see ``fasterseg.deploy.calibration``), with an automatic fp32 fallback
  when asked for an agreement floor.

Fallback (``min_agreement``), the search the onnxruntime int8 path uses too
(``fasterseg.deploy.fallback``): when the share of pixels whose class equals the fp32 model's on
the check images is under the floor, convolutions are kept in fp32 (NNCF's ``ignored_scope``).
Each convolution is first scored alone in fp32 without quantizing again
(``fasterseg.deploy.openvino_graph.fp32_variant``: the quantized model with that convolution's
FakeQuantize bypassed and its fp32 weights back, one compile each instead of one
``nncf.quantize`` with its calibration), then they are added by
agreement gained per MAC, each step a real quantization, until the floor or ``max_fallback``.
``info`` names the convolutions kept (``fp32_nodes``: ``convN``, the N-th convolution in graph
order, stable from one conversion to the next, unlike OpenVINO's node names; ``fp32_layers``:
the PyTorch modules they come from).

``openvino`` and ``nncf`` are optional (``pip install 'fasterseg[openvino]'``) and imported only
when used: without them ``openvino_version()`` is None and every entry point is a one-line
``UserError``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from fasterseg.deploy.openvino_graph import conv_layers, conv_macs, fp32_variant
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

OVDType = Literal["fp32", "bf16", "int8"]
DTYPES: tuple[str, ...] = ("fp32", "bf16", "int8")
INSTALL = "pip install 'fasterseg[openvino]'"
_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8 regardless


def _import_openvino() -> Any:
    """The ``openvino`` module, or a one-line ``UserError`` with the install hint."""
    try:
        import openvino
    except ImportError:
        raise UserError(f"OpenVINO is not installed: {INSTALL}") from None
    return openvino


def openvino_version() -> str | None:
    """The installed OpenVINO version (e.g. ``2026.4.1``), None when it is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version()).split("-")[0]


def nncf_version() -> str | None:
    """The installed NNCF version (OpenVINO's int8 quantizer), None when it is not installed."""
    if importlib.util.find_spec("nncf") is None:
        return None
    try:
        import nncf
    except ImportError:
        return None
    return str(nncf.__version__)


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UserError(f"unknown OpenVINO dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise UserError(f"input size must be HxW with positive sides, got {size}")
    return int(size[0]), int(size[1])


def convert(model: nn.Module, size: tuple[int, int]) -> Any:
    """The fp32 ``openvino.Model`` of ``model`` for input ``[1, 3, H, W]`` (fixed shape).

    The PyTorch front end traces the module on a zero image; bilinear ``align_corners=True``
    resizes become one ``Interpolate`` (mode linear, ``align_corners``), as in the ONNX export.
    The caller's model is left untouched (a deep copy is traced).
    """
    ov = _import_openvino()
    net = copy.deepcopy(model).eval().float().cpu()
    example = torch.zeros(1, 3, *size)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(net, example_input=example, input=[(1, 3, *size)])
    except Exception as e:  # the front end reports unsupported ops as long multi-line messages
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"OpenVINO could not convert the model: {first}") from None
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def quantize_nncf(ov_model: Any, calib: Sequence[torch.Tensor], *,
                  fp32_nodes: Sequence[str] = (), bias_correction: bool = False) -> Any:
    """NNCF post-training int8 quantization of ``ov_model`` on ``calib`` ([1, 3, H, W] images).

    Symmetric int8 weights and activations (the ``PERFORMANCE`` preset: what the CPU plugin runs
    fastest); every calibration image is used. ``fp32_nodes``: OpenVINO node names NNCF leaves
    in fp32 (``nncf.IgnoredScope``). NNCF's fast bias correction is off by default: on the
    CamVid-trained student (384x480, 20 val images) it lowered the agreement with fp32 from
    99.33 % to 98.84 % and doubled the quantization time (docs/openvino.md).
    """
    try:
        import nncf
    except ImportError:
        raise UserError(f"OpenVINO int8 needs NNCF, which is not installed: {INSTALL}") from None
    if not calib:
        raise UserError("OpenVINO int8 needs calibration images (none were given)")
    shape = tuple(ov_model.inputs[0].get_partial_shape().to_shape())
    arrays = []
    for t in calib:
        a = t.detach().float().cpu().numpy()
        if a.ndim == 3:
            a = a[None]
        if tuple(a.shape) != shape:
            raise UserError(f"calibration image of shape {list(a.shape)} does not match the "
                            f"model input {list(shape)}")
        arrays.append(np.ascontiguousarray(a))
    ignored = nncf.IgnoredScope(names=list(fp32_nodes)) if fp32_nodes else None
    advanced = nncf.AdvancedQuantizationParameters(disable_bias_correction=not bias_correction)
    with _quiet_nncf():
        return nncf.quantize(ov_model, nncf.Dataset(arrays), subset_size=len(arrays),
                             preset=nncf.QuantizationPreset.PERFORMANCE,
                             target_device=nncf.TargetDevice.CPU, ignored_scope=ignored,
                             advanced_parameters=advanced)


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs INFO lines and draws progress bars (rich) on stdout, which would end up inside
    ``bench --json`` output: keep its logging to warnings and its bars out of stdout."""
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def compile_config(dtype: str, threads: int | None, streams: int = 1) -> dict[str, str]:
    """CPU plugin properties: inference precision, thread count and the stream layout.

    One stream: the latency hint (every thread on one inference). ``streams`` > 1: that many
    CPU streams, ``threads`` shared among them (``INFERENCE_NUM_THREADS`` is the total), so as
    many calls from different threads run at once, each on its own share of the cores
    (``predict --workers``).
    """
    config = {"INFERENCE_PRECISION_HINT": _PRECISION[dtype]}
    if int(streams) > 1:
        config["NUM_STREAMS"] = str(int(streams))  # explicit: no hint picks its own count
    else:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if threads is not None:
        if int(threads) < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


class OpenVINOPredictor:
    """An OpenVINO model compiled for the CPU at one input size (batch 1 per inference).

    Callable from several threads at once: each thread has its own infer request (one request
    serves one inference at a time); ``overlap(k)`` compiles for ``k`` streams so that ``k``
    such calls really run side by side.
    """

    backend = "openvino"

    def __init__(self, ov_model: Any, dtype: str, size: tuple[int, int], threads: int | None,
                 info: dict[str, Any], streams: int = 1) -> None:
        ov = _import_openvino()
        self.name = f"openvino-{dtype}"
        self.dtype = dtype
        self.size = size
        self.model = ov_model  # kept for save() and overlap()
        self._core = ov.Core()
        self._threads = threads
        self.streams = 1
        self._compile(max(1, int(streams)))  # compiled once, for as many calls as will overlap
        ran = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        core = self._core
        self.info = {
            "openvino": openvino_version(),
            "device": "CPU",
            "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "cpu_capabilities": [str(c) for c in core.get_property("CPU",
                                                                   "OPTIMIZATION_CAPABILITIES")],
            "requested_precision": _PRECISION[dtype],
            "inference_precision": ran,
            "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "performance_hint": "LATENCY" if self.streams == 1 else "none (streams)",
            **info,
        }
        if self.streams > 1:
            self.info["streams"] = int(self.compiled.get_property("NUM_STREAMS"))
        if dtype == "bf16" and ran != "bf16":
            self.info["note"] = (f"this CPU has no native bf16: OpenVINO ignored the bf16 hint "
                                 f"and runs {ran}")
            logger.warning("openvino-bf16: %s", self.info["note"])

    def _compile(self, streams: int) -> None:
        """Compile ``self.model`` for ``streams`` CPU streams; infer requests start afresh."""
        config = compile_config(self.dtype, self._threads, streams)
        try:
            self.compiled = self._core.compile_model(self.model, "CPU", config)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"OpenVINO could not compile the model for the CPU: {first}") from None
        self.streams = streams
        self._local = threading.local()  # one infer request per calling thread

    def overlap(self, streams: int, threads: int | None = None) -> OpenVINOPredictor:
        """Compile again for ``streams`` calls at once sharing ``threads`` (default: the
        threads it was built with); returns self. Outputs stay the same: each stream runs the
        same compiled graph, only on fewer threads."""
        streams = max(1, int(streams))
        if threads is not None:
            self._threads = int(threads)
        if streams != self.streams or threads is not None:
            self._compile(streams)
            self.info.update(streams=int(self.compiled.get_property("NUM_STREAMS")),
                             threads=int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                             performance_hint="LATENCY" if streams == 1 else "none (streams)")
        return self

    @property
    def request(self) -> Any:
        """This thread's infer request (created on its first call)."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` fp32 -> fp32 logits ``[B, C, H, W]`` (one inference per image)."""
        x = x.detach().float().cpu()
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, *self.size):
            raise UserError(f"openvino path was compiled for [B, 3, {self.size[0]}, "
                            f"{self.size[1]}] inputs, got {list(x.shape)}")
        request = self.request
        outs = []
        for i in range(x.shape[0]):
            request.infer({0: np.ascontiguousarray(x[i:i + 1].numpy())}, share_inputs=True)
            outs.append(torch.from_numpy(request.get_output_tensor(0).data.copy()))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def save(self, path: str | Path) -> Path:
        """OpenVINO IR: ``path`` with suffix ``.xml`` plus the ``.bin`` beside it."""
        return save_ir(self.model, path, self.dtype)


def load_ir(path: str | Path, dtype: str, size: Sequence[int], threads: int | None,
            info: dict[str, Any] | None = None, streams: int = 1) -> OpenVINOPredictor:
    """An IR written by ``save_ir`` compiled as a predictor (no conversion, no calibration)."""
    ov = _import_openvino()
    try:
        ov_model = ov.Core().read_model(str(Path(path).with_suffix(".xml")))
    except Exception as e:  # a truncated or foreign file: the caller rebuilds
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read OpenVINO IR {path}: {first}") from None
    return OpenVINOPredictor(ov_model, _check_dtype(dtype), _check_size(size), threads,
                             dict(info or {}), streams)


def _type_name(t: Any) -> str:
    """``openvino.Type.f32`` -> ``f32`` (what the CPU plugin reports as inference precision)."""
    return str(t.get_type_name()) if hasattr(t, "get_type_name") else str(t)


def save_ir(ov_model: Any, path: str | Path, dtype: str = "fp32") -> Path:
    """Write ``ov_model`` as IR (``.xml`` + ``.bin``) atomically; returns the ``.xml`` path.

    Weights are stored at full precision (no fp16 compression), so an fp32 IR computes what the
    PyTorch model does. fp32 and bf16 IRs hold the same graph: bf16 is chosen when the IR is
    compiled (``INFERENCE_PRECISION_HINT``; OpenVINO's CPU plugin picks bf16 by itself on CPUs
    with native bf16), so the requested precision is only recorded, in the IR's ``fasterseg``
    rt_info section (``precision``), next to the input size.
    """
    ov = _import_openvino()
    xml = Path(path).with_suffix(".xml")
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov_model = ov_model.clone()  # the rt_info below must not leak into the caller's model
    ov_model.set_rt_info(_check_dtype(dtype), ["fasterseg", "precision"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", suffix=".tmp", dir=xml.parent))
    try:
        ov.save_model(ov_model, str(tmp / xml.name), compress_to_fp16=False)
        os.replace(tmp / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(tmp / xml.name, xml)
    except OSError as e:
        raise UserError(f"cannot write OpenVINO IR {xml}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def _prepare(model: nn.Module, size: Sequence[int], dtype: str,
             calib: list[torch.Tensor] | None) -> tuple[Any, dict[str, Any]]:
    """Convert (and for int8 quantize) ``model``: (openvino.Model, info)."""
    ov_model, info = _convert_checked(model, size, dtype, calib)
    if dtype == "int8":
        ov_model = quantize_nncf(ov_model, calib or [])
        info.update(quantizer="nncf.quantize", nncf=nncf_version(), preset="performance",
                    bias_correction=False, calibration_images=len(calib or []))
    return ov_model, info


def _convert_checked(model: nn.Module, size: Sequence[int], dtype: str,
                     calib: list[torch.Tensor] | None) -> tuple[Any, dict[str, Any]]:
    """Check the arguments (one-line errors before any slow work), convert: (model, info)."""
    _import_openvino()
    _check_dtype(dtype)
    size = _check_size(size)
    if dtype == "int8":
        if nncf_version() is None:
            raise UserError(f"OpenVINO int8 needs NNCF, which is not installed: {INSTALL}")
        if not calib:
            raise UserError("OpenVINO int8 needs calibration images (none were given)")
    ov_model = convert(model, size)
    info: dict[str, Any] = {"convert": "openvino.convert_model (PyTorch front end)",
                            "input": [1, 3, *size]}
    return ov_model, info


def _int8_with_fallback(
    model: nn.Module,
    size: tuple[int, int],
    calib: list[torch.Tensor],
    *,
    threads: int | None,
    check: list[torch.Tensor] | None,
    min_agreement: float | None,
    keep_fp32: Sequence[str] | None,
    max_fallback: int,
) -> OpenVINOPredictor:
    """int8 with the fp32 fallback of the module docstring (or the given ``keep_fp32``
    convolutions, no search); the returned predictor's ``info`` says what was kept and why."""
    from fasterseg.deploy import fallback
    from fasterseg.deploy.int8 import FALLBACK_COST, agreement

    if min_agreement is not None and not 0.0 <= float(min_agreement) <= 1.0:
        raise UserError(f"min_agreement must be within 0..1, got {min_agreement}")
    for im in [*calib, *(check or [])]:
        if im.dim() != 4 or im.shape[1] != 3 or tuple(im.shape[-2:]) != tuple(size):
            raise UserError(f"calibration/check image of shape {tuple(im.shape)} does not match "
                            f"[1, 3, {size[0]}, {size[1]}]")
    t_start = time.perf_counter()
    ov_model, info = _convert_checked(model, size, "int8", calib)
    convs = conv_layers(ov_model)
    by_id = {c["id"]: c for c in convs}
    macs = conv_macs(ov_model)
    if keep_fp32 is not None:
        bad = [n for n in keep_fp32 if n not in by_id]
        if bad:
            raise UserError(f"keep_fp32: no convolution {bad[0]!r} in the converted model "
                            f"(conv0 .. conv{len(convs) - 1})")
    on_calib = check is None
    probe = calib if on_calib else check
    if on_calib and keep_fp32 is None:  # a saved choice's layers: nothing is decided here
        logger.warning("openvino-int8: no check images; agreement is measured on the "
                       "calibration images")
    net = copy.deepcopy(model).eval().float().cpu()
    with torch.inference_mode():
        reference = [net(x).argmax(1) for x in probe]
    quantized: dict[str, Any] = {}
    counts = {"quantize": 0, "variants": 0}

    def build(ids: list[str]) -> tuple[float, OpenVINOPredictor]:
        q = quantize_nncf(ov_model, calib, fp32_nodes=[by_id[i]["node"] for i in ids])
        counts["quantize"] += 1
        quantized.setdefault("base", q)  # the first build: the forced layers only
        pred = OpenVINOPredictor(q, "int8", size, threads, {})
        return agreement(pred, probe, reference), pred

    def score_one(cid: str) -> float:
        counts["variants"] += 1
        variant = fp32_variant(quantized["base"], ov_model, by_id[cid]["node"])
        return agreement(OpenVINOPredictor(variant, "int8", size, threads, {}), probe, reference)

    searching = keep_fp32 is None and min_agreement is not None
    found = fallback.search(build, [c["id"] for c in convs],
                            floor=min_agreement if searching else None,
                            forced=list(keep_fp32 or []), max_fallback=max_fallback,
                            score_one=score_one, cost=macs if FALLBACK_COST else None,
                            what="openvino-int8")
    reached = None if min_agreement is None else found.agreement >= min_agreement
    if reached is False and searching:
        logger.warning("openvino-int8: agreement with fp32 %.4f stays under the floor %.4f "
                       "after %d fp32 fallbacks", found.agreement, min_agreement, len(found.kept))
    best, best_ids = found.model, found.fp32
    best.info.update(
        info, quantizer="nncf.quantize", nncf=nncf_version(), preset="performance",
        bias_correction=False, calibration_images=len(calib), agreement=found.agreement,
        agreement_on="calibration" if on_calib else "check", check_images=len(probe),
        min_agreement=min_agreement, reached=reached, fp32_nodes=best_ids,
        fp32_layers=[by_id[i]["layer"] for i in best_ids],
        ignored_scope=[by_id[i]["node"] for i in best_ids],
        fallback=found.kept, fallback_steps=found.steps,
        fallback_rank="gain per MAC" if FALLBACK_COST else "gain",
        sensitivity=found.sensitivity, quantizations=counts["quantize"],
        fp32_macs=sum(macs.get(i, 0) for i in best_ids), macs=sum(macs.values()),
        int8_convs=len(convs) - len(best_ids), convs=len(convs),
        quantize_s=time.perf_counter() - t_start)
    return best


def compile_openvino(
    model: nn.Module,
    size: tuple[int, int],
    dtype: str = "fp32",
    *,
    threads: int | None = None,
    calib: list[torch.Tensor] | None = None,
    check: list[torch.Tensor] | None = None,
    min_agreement: float | None = None,
    keep_fp32: Sequence[str] | None = None,
    max_fallback: int = 8,
    streams: int = 1,
) -> OpenVINOPredictor:
    """``model`` (fp32, eval; left untouched) as an OpenVINO CPU ``Predictor`` at ``size``.

    ``dtype``: ``fp32``, ``bf16`` (inference-precision hint; f32 on CPUs without bf16, see
    ``info["inference_precision"]``) or ``int8`` (NNCF on ``calib``, normalised ``[1, 3, H, W]``
    images, e.g. from ``fasterseg.deploy.calibration.calibration_images``). ``threads``: the CPU
    plugin's inference threads (default: OpenVINO's choice). Errors are one-line ``UserError``s.

    int8 only: ``min_agreement`` (e.g. 0.995) turns on the fp32 fallback search (module
    docstring), measured against ``model`` on ``check`` (other images than ``calib``; None: on
    ``calib``, optimistic, said so in ``info``), at most ``max_fallback`` steps; ``keep_fp32``
    (``convN`` ids, e.g. a previous ``info["fp32_nodes"]``) keeps those convolutions in fp32 and
    skips the search. Neither given: every convolution in int8, no agreement measured.
    ``streams``: compiled for that many overlapping calls (see ``overlap``).
    """
    if dtype == "int8" and (min_agreement is not None or keep_fp32 is not None):
        if nncf_version() is None:
            _import_openvino()
            raise UserError(f"OpenVINO int8 needs NNCF, which is not installed: {INSTALL}")
        if not calib:
            raise UserError("OpenVINO int8 needs calibration images (none were given)")
        pred = _int8_with_fallback(model, _check_size(size), calib, threads=threads,
                                   check=check, min_agreement=min_agreement,
                                   keep_fp32=keep_fp32, max_fallback=int(max_fallback))
        return pred.overlap(streams) if streams > 1 else pred
    ov_model, info = _prepare(model, size, dtype, calib)
    return OpenVINOPredictor(ov_model, dtype, _check_size(size), threads, info, streams)


def export_ir(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int],
    dtype: str = "fp32",
    calib: list[torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` as OpenVINO IR for input ``[1, 3, H, W]``: the ``.xml`` (returned) and
    the ``.bin`` beside it. Input ``image`` (normalised fp32), output ``logits`` (fp32 at the
    input size). int8 quantizes with NNCF on ``calib`` (every convolution; the checked path
    with its fp32 fallback is ``compile_openvino(..., min_agreement=...).save``); bf16 is the
    same graph as fp32 (compile it with ``INFERENCE_PRECISION_HINT=bf16``), recorded in the IR's
    rt_info.
    """
    ov_model, _ = _prepare(model, size, dtype, calib)
    return save_ir(ov_model, path, dtype)
