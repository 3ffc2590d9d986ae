"""The candidate inference paths that ``bench --auto`` measures, each behind ``Predictor``.

Which path is fastest depends on the machine (bf16 wins only with native bf16 instructions, int8
needs VNNI to shine, OpenVINO may beat TorchScript or not), so every path is built the same way
here and the chooser (``fasterseg.deploy.auto``) times them on the spot:

- ``eager-fp32``: the model as trained, PyTorch eager: the reference every other path is checked
  against;
- ``jit-fp32``: TorchScript trace + freeze with oneDNN Graph fusion, BatchNorm folded, NHWC
  memory (the former ``bench --fast``; the tuned allocator is process-wide, set by the caller);
- ``torch-bf16-cl`` (CPU, CUDA) / ``torch-fp16-cl`` (CUDA): BN folded, NHWC, bf16/fp16 weights;
  the final x8 bilinear resize runs in fp32 (a bf16 resize of full-size logits is slow on CPUs
  without native bf16, and the logits must come back as fp32 anyway);
- ``onnxruntime-fp32``: the ONNX export in an onnxruntime session;
- ``int8``: ``fasterseg.deploy.int8.quantize_int8``, calibrated on the images given;
- ``openvino-fp32|bf16|int8``: ``fasterseg.deploy.openvino.compile_openvino`` (when installed);
  int8 with the same automatic fp32 fallback, floor and tuning images as ``int8``.

The int8 and OpenVINO modules are imported lazily: when absent, those candidates are simply not
available here.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from fasterseg.deploy.predictor import Predictor
from fasterseg.errors import UserError
from fasterseg.latency.backends import set_threads

logger = logging.getLogger(__name__)

# name -> (backend, dtype) as reported by bench --json; in the order the table shows them.
CANDIDATES: dict[str, tuple[str, str]] = {
    "eager-fp32": ("torch", "fp32"),
    "jit-fp32": ("jit", "fp32"),
    "torch-bf16-cl": ("torch", "bf16"),
    "torch-fp16-cl": ("torch", "fp16"),
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "int8": ("int8", "int8"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-int8": ("openvino", "int8"),
}
REFERENCE = "eager-fp32"
NEEDS_CALIBRATION = ("int8", "openvino-int8")
_LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_name(name: str) -> str:
    """``name`` if it is a candidate, else a one-line ``UserError`` listing them."""
    if name not in CANDIDATES:
        raise UserError(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
    return name


def runs_on(name: str, device: str | torch.device = "cpu") -> bool:
    """Whether candidate ``name`` is meant for this kind of device at all (CPU-only engines,
    fp16 only on GPUs), whatever is installed."""
    cuda = torch.device(device).type == "cuda"
    if name in ("jit-fp32", "int8") or name.startswith("openvino-"):
        return not cuda
    if name == "torch-fp16-cl":
        return cuda
    return True


def unavailable_reason(name: str, device: str | torch.device = "cpu") -> str | None:
    """Why candidate ``name`` cannot run on ``device`` here (one line), or None when it can."""
    check_name(name)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if not runs_on(name, dev):
        return ("fp16 is for GPUs (bf16 is the CPU's low-precision type)"
                if name == "torch-fp16-cl" else f"{name} runs on the CPU only")
    if name == "torch-bf16-cl" and cuda and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    if name == "onnxruntime-fp32":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if cuda:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime here has no CUDA provider (install onnxruntime-gpu)"
    if name == "int8":
        try:
            from fasterseg.deploy.int8 import int8_methods
        except ImportError as e:
            return f"the int8 module is not available ({e})"
        if not int8_methods():
            return "no int8 engine is available here"
    if name.startswith("openvino-"):
        try:
            from fasterseg.deploy.openvino import openvino_version
        except ImportError as e:
            return f"the OpenVINO module is not available ({e})"
        if openvino_version() is None:
            return "OpenVINO is not installed: pip install 'fasterseg[openvino]'"
        if name == "openvino-int8" and importlib.util.find_spec("nncf") is None:
            return "openvino-int8 needs NNCF: pip install 'fasterseg[openvino]'"
        if name == "openvino-bf16" and not _native_bf16():
            return "this CPU has no native bf16 (OpenVINO would run openvino-fp32 again)"
    return None


def _native_bf16() -> bool:
    from fasterseg.utils.environment import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def candidate_names(device: str | torch.device = "cpu") -> list[str]:
    """The candidates that can run on ``device`` here, reference (``eager-fp32``) first."""
    return [n for n in CANDIDATES if unavailable_reason(n, device) is None]


# ----------------------------------------------------------------------------- torch paths


class _Deployed(nn.Module):
    """fp32 NCHW in, fp32 logits out, whatever the inside runs in: casts the input to ``dtype``
    and ``memory_format``; in low precision the network runs up to its 1/8 logits
    (``head_logits``) and the x8 bilinear resize runs in fp32 (nets without ``head_logits``:
    the whole net, then a cast)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fasterseg.search_space.operators import resize

        h, w = x.shape[-2:]
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.net(x)
        if hasattr(self.net, "head_logits") and hasattr(self.net, "features"):
            return resize(self.net.head_logits(self.net.features(x)).float(), (h, w))
        return self.net(x).float()


class TorchPredictor:
    """A PyTorch module (eager or TorchScript) prepared for one size on one device."""

    def __init__(self, name: str, backend: str, dtype: str, fn: Callable[[torch.Tensor], Any],
                 device: torch.device, info: dict[str, Any], size: Sequence[int]) -> None:
        self.name, self.backend, self.dtype, self.info = name, backend, dtype, info
        self.fn = fn
        self.device = device
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x.to(self.device, torch.float32))

    def save(self, path: str | Path) -> Path:
        """TorchScript file (``.pt``): fp32 NCHW in, fp32 logits out, runs without fasterseg."""
        from fasterseg.utils.io import atomic_write

        path = Path(path).with_suffix(".pt")
        fn = self.fn
        if not isinstance(fn, torch.jit.ScriptModule):
            example = torch.zeros(1, 3, *self.size, device=self.device)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn = torch.jit.freeze(torch.jit.trace(fn, (example,), check_trace=False).eval())

        def write(f) -> None:
            with warnings.catch_warnings():  # torch announces torch.export; the file is fine
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(fn, f)

        return atomic_write(path, write, mode="wb")


def _torch_path(name: str, model: nn.Module, size: Sequence[int], device: torch.device,
                dtype: str, channels_last: bool, fuse: bool, script: bool) -> TorchPredictor:
    from fasterseg.bench.fuse import fuse_conv_bn

    net = fuse_conv_bn(model) if fuse else copy.deepcopy(model).eval()
    tdt = _LOW.get(dtype, torch.float32)
    net = net.to(device=device, dtype=tdt)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fn: Callable = _Deployed(net, tdt, channels_last).eval()
    if script:
        torch.jit.enable_onednn_fusion(True)
        example = torch.zeros(1, 3, *size, device=device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = torch.jit.freeze(torch.jit.trace(fn, (example,), check_trace=False).eval())
            for _ in range(2):  # the oneDNN fuser profiles the first runs, then compiles
                fn(example)
    backend = CANDIDATES[name][0]
    info = {"fuse_bn": fuse, "channels_last": channels_last, "torchscript": script,
            "final_resize": "fp32"}
    return TorchPredictor(name, backend, dtype, fn, device, info, size)


# ---------------------------------------------------------------------------- onnxruntime


class OrtPredictor:
    """The fp32 ONNX export in an onnxruntime session (all graph optimisations)."""

    name, backend, dtype = "onnxruntime-fp32", "onnxruntime", "fp32"

    def __init__(self, model: nn.Module, size: Sequence[int], threads: int | None,
                 device: torch.device) -> None:
        import onnxruntime as ort

        from fasterseg.latency.backends import export_onnx_bytes, ort_session_options

        self.model = copy.deepcopy(model).eval().float().cpu()  # kept for save()
        self.size = (int(size[0]), int(size[1]))
        so = ort_session_options(threads)
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        data = export_onnx_bytes(self.model, [torch.zeros(1, 3, *self.size)])
        self.session = ort.InferenceSession(data, so, providers=providers)
        self.input = self.session.get_inputs()[0].name
        self.info = {"onnxruntime": ort.__version__,
                     "providers": self.session.get_providers()}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input: x.detach().float().cpu().numpy()})
        return torch.from_numpy(out)

    def save(self, path: str | Path) -> Path:
        """The ONNX file as ``fasterseg export`` writes it (input ``image``, output ``logits``)."""
        from fasterseg.export.onnx import export_onnx

        return export_onnx(self.model, Path(path).with_suffix(".onnx"), self.size)


# ------------------------------------------------------------------------------- builders


def _generated_calibration(size: Sequence[int], n: int = 8) -> list[torch.Tensor]:
    from fasterseg.deploy.calibration import calibration_images

    return calibration_images(None, tuple(size), n)[0]


def build_candidate(
    name: str,
    model: nn.Module,
    size: Sequence[int],
    *,
    threads: int | None = None,
    calib: list[torch.Tensor] | None = None,
    check: list[torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    min_agreement: float = 0.995,
    keep_fp32: Sequence[str] | None = None,
    streams: int = 1,
) -> Predictor:
    """Prepare candidate ``name`` of ``model`` (fp32, eval; left untouched) at ``size``.

    ``calib``: normalised ``[1, 3, H, W]`` images the int8 paths calibrate on (default: generated
    scenes, with a warning). ``check``: images the int8 path may tune its fp32 fallback layers on
    (from the calibration split, never the held-out images agreement is measured on), up to
    ``min_agreement``. ``keep_fp32``: int8 paths only, the layers to keep in fp32 (a saved
    choice's ``info["fp32_nodes"]``), which skips the fallback search. ``streams``: OpenVINO
    paths only, compiled for that many overlapping calls. Unavailable candidates and unknown
    names are a one-line ``UserError``.
    """
    dev = torch.device(device)
    why = unavailable_reason(name, dev)
    if why is not None:
        raise UserError(f"candidate {name} is not available here: {why}")
    size = (int(size[0]), int(size[1]))
    if dev.type == "cpu":
        set_threads(threads)
    model = model.eval()
    if name == "eager-fp32":
        return _torch_path(name, model, size, dev, "fp32", False, False, False)
    if name == "jit-fp32":
        return _torch_path(name, model, size, dev, "fp32", True, True, True)
    if name in ("torch-bf16-cl", "torch-fp16-cl"):
        return _torch_path(name, model, size, dev, name.split("-")[1], True, True, False)
    if name == "onnxruntime-fp32":
        return OrtPredictor(model, size, threads, dev)
    if name in NEEDS_CALIBRATION and calib is None:
        calib = _generated_calibration(size)
    if name == "int8":
        from fasterseg.deploy.int8 import quantize_int8

        kw = {} if keep_fp32 is None else {"keep_fp32": list(keep_fp32)}
        return quantize_int8(model, size, calib, threads=threads, check=check,
                             min_agreement=min_agreement, **kw)
    from fasterseg.deploy.openvino import compile_openvino

    dtype = name.split("-", 1)[1]
    if dtype != "int8":
        return compile_openvino(model, size, dtype, threads=threads, streams=streams)
    return compile_openvino(model, size, dtype, threads=threads, calib=calib, check=check,
                            min_agreement=min_agreement,
                            keep_fp32=None if keep_fp32 is None else list(keep_fp32),
                            streams=streams)
