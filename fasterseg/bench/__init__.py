"""Inference benchmarks (latency/FPS with the full method) and inference-time graph rewrites."""

from fasterseg.bench.fuse import fuse_conv_bn
from fasterseg.bench.runner import BenchSettings, benchmark, load_bench_model

__all__ = ["BenchSettings", "benchmark", "fuse_conv_bn", "load_bench_model"]
