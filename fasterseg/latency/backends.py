"""Measurement back ends shared by the latency table, ``latency check`` and ``fasterseg bench``.

A back end turns ``(module, example inputs)`` into a zero-argument callable that runs one
synchronised inference; ``time_runs`` times that callable. Timing is wall clock with
``time.perf_counter`` on CPU and CUDA events (after synchronisation) on GPU, so asynchronous
kernel launches are never mistaken for finished work.
"""

from __future__ import annotations

import copy
import io
import logging
import platform
import statistics
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import nn

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

Backend = Literal["torch", "compile", "jit", "onnxruntime", "tensorrt"]
DType = Literal["fp32", "bf16", "fp16"]
BACKENDS: tuple[str, ...] = ("torch", "compile", "jit", "onnxruntime", "tensorrt")
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16
}


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the physical device (CPU model or GPU name)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "cpu"


def library_versions() -> dict[str, str]:
    """Versions that change latencies (recorded in tables and benchmark results)."""
    import numpy

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "numpy": numpy.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        v["cuda"] = str(torch.version.cuda)
        v["cudnn"] = str(torch.backends.cudnn.version())
    try:
        import tensorrt  # type: ignore[import-not-found]

        v["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return v


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (CPU timings depend on it); returns the value."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Runner:
    """A prepared inference: ``run()`` executes once and returns the output (synchronised)."""

    run: Callable[[], Any]
    device: torch.device
    description: str


# --------------------------------------------------------------------------------- torch


def prepare_torch(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    dtype: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> Runner:
    """Eager (or ``torch.compile``) PyTorch under ``inference_mode``; weights cast to ``dtype``."""
    tdt = DTYPES[dtype]
    if dtype != "fp32" or channels_last or device.type != "cpu":
        module = copy.deepcopy(module)  # .to() converts in place: leave the caller's model alone
    module = module.eval().to(device=device, dtype=tdt)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    xs = [x.to(device=device, dtype=tdt).contiguous(memory_format=fmt) for x in inputs]
    fn: Callable = module
    if compile:
        # Freezing folds the weights into the graph as constants, which lets inductor prepack
        # them for oneDNN and fuse conv + ReLU on CPU (inference only: no gradients anyway).
        fn = torch.compile(module, dynamic=False, options={"freezing": True})

    def run() -> Any:
        with torch.inference_mode():
            out = fn(*xs)
        synchronize(device)
        return out

    cl = " channels_last" if channels_last else ""
    desc = f"torch{'.compile' if compile else ''} {dtype}{cl}"
    return Runner(run, device, desc)


def prepare_jit(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    dtype: str = "fp32",
    channels_last: bool = False,
) -> Runner:
    """TorchScript trace + freeze with oneDNN Graph fusion (CPU): conv + ReLU (+ add, concat)
    partitions run as fused oneDNN kernels with prepacked weights; the rest stays ATen."""
    import warnings as _w

    if device.type != "cpu":
        raise UserError("backend jit (TorchScript + oneDNN Graph) is for --device cpu")
    tdt = DTYPES[dtype]
    module = copy.deepcopy(module).eval().to(dtype=tdt)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    xs = [x.to(dtype=tdt).contiguous(memory_format=fmt) for x in inputs]
    torch.jit.enable_onednn_fusion(True)
    with torch.no_grad(), _w.catch_warnings():
        _w.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(module, tuple(xs), check_trace=False).eval())
        for _ in range(2):  # the fuser profiles the first runs, then compiles partitions
            traced(*xs)

    def run() -> Any:
        with torch.no_grad():
            return traced(*xs)

    cl = " channels_last" if channels_last else ""
    return Runner(run, device, f"jit+onednn-graph {dtype}{cl}")


# ---------------------------------------------------------------------------------- onnx


def export_onnx_bytes(module: nn.Module, inputs: Sequence[torch.Tensor], opset: int = 17) -> bytes:
    """Export to ONNX in memory (TorchScript exporter: fast and enough for these static nets)."""
    module = module.eval().float().cpu()
    args = tuple(x.float().cpu() for x in inputs)
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, f, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[f"input{i}" for i in range(len(args))], output_names=["output"],
        )
    return f.getvalue()


def ort_session_options(threads: int | None):
    """onnxruntime options every path shares: all graph optimisations, ``threads`` intra-op
    threads (one inter-op thread: a batch-1 graph has no parallel branches worth a pool), quiet."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def prepare_onnxruntime(
    module: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device, threads: int | None,
    dtype: str = "fp32",
) -> Runner:
    """ONNX Runtime session (CPU or CUDA provider) with all graph optimisations."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(
            "backend onnxruntime needs the onnxruntime package (pip install onnxruntime)"
        ) from None
    if dtype != "fp32":
        raise UserError(
            "backend onnxruntime measures fp32 only here; use --dtype fp32 (or backend torch)"
        )
    model_bytes = export_onnx_bytes(module, inputs)
    so = ort_session_options(threads)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
        providers = [
            ("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"
        ]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(model_bytes, so, providers=providers)
    feeds = {f"input{i}": x.float().cpu().numpy() for i, x in enumerate(inputs)}

    def run() -> Any:
        return sess.run(None, feeds)

    return Runner(run, device, "onnxruntime fp32")


# ------------------------------------------------------------------------------ tensorrt


def prepare_tensorrt(
    module: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device, dtype: str = "fp32",
    workspace_gb: float = 1.0,
) -> Runner:
    """TensorRT 10 engine from ONNX, executed with the name-based tensor API on a CUDA stream."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise UserError(
            "backend tensorrt needs the tensorrt Python package (TensorRT 10), which is not "
            "installed; use --backend torch or onnxruntime"
        ) from None
    if device.type != "cuda":
        raise UserError("backend tensorrt needs a CUDA device (--device cuda)")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(export_onnx_bytes(module, inputs)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse the exported ONNX model: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if dtype == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif dtype == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError("TensorRT failed to build an engine for this model")
    engine = trt.Runtime(trt_logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    stream = torch.cuda.Stream(device)
    buffers = {}
    in_iter = iter(inputs)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(engine.get_tensor_shape(name))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            t = next(in_iter).float().to(device).contiguous()
        else:
            t = torch.empty(shape, dtype=torch.float32, device=device)
        buffers[name] = t
        context.set_tensor_address(name, t.data_ptr())

    def run() -> Any:
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return buffers

    return Runner(run, device, f"tensorrt {dtype}")


# ------------------------------------------------------------------------------- dispatch


def prepare(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    backend: str = "torch",
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    threads: int | None = None,
    channels_last: bool = False,
) -> Runner:
    """Prepare ``module`` on ``inputs`` for the chosen back end (weights are kept as given)."""
    dev = torch.device(device)
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if backend in ("torch", "compile"):
        compiled = backend == "compile"
        return prepare_torch(module, inputs, dev, dtype, channels_last, compile=compiled)
    if backend == "jit":
        return prepare_jit(module, inputs, dev, dtype, channels_last)
    if backend == "onnxruntime":
        return prepare_onnxruntime(module, inputs, dev, threads, dtype)
    if backend == "tensorrt":
        return prepare_tensorrt(module, inputs, dev, dtype)
    raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


Clock = Literal["wall", "cpu"]


def check_clock(clock: str, device: str | torch.device, threads: int | None) -> None:
    """The ``cpu`` clock (thread CPU time) is a latency only for one thread on a CPU device."""
    if clock not in ("wall", "cpu"):
        raise UserError(f"unknown clock {clock!r}; choose wall or cpu")
    if clock == "cpu" and (torch.device(device).type != "cpu" or threads != 1):
        raise UserError("--clock cpu needs --device cpu and --threads 1 (it measures the CPU time "
                        "of the one thread that runs the model)")


def time_runs(runner: Runner, warmup: int, reps: int, clock: str = "wall") -> list[float]:
    """Milliseconds of ``reps`` runs after ``warmup`` untimed runs.

    ``clock="wall"``: elapsed time (CUDA events on GPU). ``clock="cpu"``: CPU time of the calling
    thread, which with a single compute thread equals the latency the run would have had without
    other processes taking the core away (for shared, noisy machines; see ``check_clock``).
    """
    for _ in range(warmup):
        runner.run()
    times = []
    if runner.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(reps):
            start.record()
            runner.run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        now = time.thread_time if clock == "cpu" else time.perf_counter
        for _ in range(reps):
            t0 = now()
            runner.run()
            times.append((now() - t0) * 1e3)
    return times


def time_for(runner: Runner, seconds: float, min_reps: int = 5) -> list[float]:
    """Time runs until ``seconds`` of wall clock have passed (at least ``min_reps`` runs)."""
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < t_end:
        times.extend(time_runs(runner, 0, 1))
    return times


def warm_until_steady(
    runner: Runner, max_seconds: float = 10.0, window: int = 5, tol: float = 0.05
) -> int:
    """Run until two consecutive windows of runs have medians within ``tol`` (caches, JIT...)."""
    t_end = time.perf_counter() + max_seconds
    prev = None
    n = 0
    while time.perf_counter() < t_end:
        med = statistics.median(time_runs(runner, 0, window))
        n += window
        if prev is not None and abs(med - prev) <= tol * max(prev, 1e-9):
            break
        prev = med
    return n


def measure_module(
    module: nn.Module,
    input_shapes: Sequence[Sequence[int]],
    backend: str = "torch",
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    threads: int | None = None,
    warmup: int = 10,
    reps: int = 30,
    seed: int = 0,
    clock: str = "wall",
) -> list[float]:
    """Per-run milliseconds of ``module`` on random inputs of ``input_shapes``."""
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(*s, generator=g) for s in input_shapes]
    runner = prepare(module, inputs, backend, device, dtype, threads)
    ctx = torch.inference_mode() if backend in ("torch", "compile") else nullcontext()
    with ctx:
        return time_runs(runner, warmup, reps, clock)
