"""int8 engines compared on real data: agreement with fp32 on CamVid val, latency, set-up cost.

Usage:
    python benchmarks/int8_engines.py [--model runs/camvid-cpu/student/best.pt]
        [--data camvid:../shared/data/camvid] [--calib 32] [--check 101] [--threads 1 2]
        [--rounds 5] [--big] [--torchao]

Calibrates on ``--calib`` CamVid train images and measures pixel agreement (argmax) with the
fp32 eager model on ``--check`` CamVid val images, at 384x480 (CamVid's 360x480 scaled to cover
and centre-cropped, ``fasterseg.deploy.calibration``). Candidates:

- ``int8-ort``: ``fasterseg.deploy.int8.quantize_int8`` (onnxruntime QDQ, automatic fp32
  fallback to ``--min-agreement``);
- ``int8-ort-nofallback``: the same with no fallback (floor 0): what the fallback buys;
- ``int8-ort-8bit``: 8-bit weights (no ``reduce_range``), what a VNNI CPU would run: shows the
  int16 saturation of AVX2 kernels here;
- ``torchao-pt2e`` (``--torchao``, when torchao is importable): PT2E + X86InductorQuantizer +
  ``torch.compile`` (inductor, freezing), with its compile time;
- references ``eager-fp32`` and ``onnxruntime-fp32``.

Latency: batch 1, each candidate run ``--iters`` times per round, candidates interleaved for
``--rounds`` rounds in this ONE process (a shared machine's load then hits all alike); reported
is the median of the per-round medians, per thread count. ``--big`` adds the published student
(random weights) at 1024x2048 for speed only. Writes ``benchmarks/results/int8_engines.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]


def _ort_fp32(model, size, threads: int):
    import tempfile

    import onnxruntime as ort

    from fasterseg.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "fp32.onnx", size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])

    return run


def _torchao(model, calib, size) -> tuple[Callable, dict]:
    """PT2E static int8 (X86InductorQuantizer) compiled by inductor; times both stages."""
    import torch._inductor.config as inductor_config
    import torchao
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    t0 = time.perf_counter()
    exported = torch.export.export(copy.deepcopy(model).eval(), (calib[0],)).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    converted = convert_pt2e(prepared)
    t1 = time.perf_counter()
    inductor_config.freezing = True
    compiled = torch.compile(converted)
    with torch.no_grad():
        compiled(calib[0])
    t2 = time.perf_counter()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(x)

    return run, {"engine": f"torchao {torchao.__version__}", "quantize_s": t1 - t0,
                 "compile_s": t2 - t1}


def _latency(cands: dict[str, Callable], x: torch.Tensor, threads: int, rounds: int,
             iters: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    per_round: dict[str, list[float]] = {k: [] for k in cands}
    with torch.inference_mode():
        for f in cands.values():  # warm-up
            f(x)
        for _ in range(rounds):
            for name, f in cands.items():
                times = []
                for _ in range(iters):
                    t = time.perf_counter()
                    f(x)
                    times.append(time.perf_counter() - t)
                per_round[name].append(1000 * statistics.median(times))
    return {name: {"median_ms": statistics.median(v), "per_round_ms": v}
            for name, v in per_round.items()}


def _int8_at(threads: int, model, size, calib, check, floor, **kw):
    from fasterseg.deploy.int8 import quantize_int8

    return quantize_int8(model, size, calib, check=check, threads=threads, min_agreement=floor,
                         **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/camvid-cpu/student/best.pt")
    ap.add_argument("--data", default="camvid:../shared/data/camvid")
    ap.add_argument("--size", type=int, nargs=2, default=(384, 480), metavar=("H", "W"))
    ap.add_argument("--calib", type=int, default=32, help="calibration images (train split)")
    ap.add_argument("--check", type=int, default=101, help="agreement images (val split)")
    ap.add_argument("--min-agreement", type=float, default=0.995)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--big", action="store_true", help="also time 1024x2048 (published student)")
    ap.add_argument("--torchao", action="store_true", help="also run torchao PT2E + inductor")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "int8_engines.json"))
    args = ap.parse_args(argv)

    from fasterseg.deploy import int8 as int8_mod
    from fasterseg.deploy.calibration import calibration_images
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.utils.environment import collect_env
    from fasterseg.utils.io import write_json

    size = tuple(args.size)
    torch.set_num_threads(max(args.threads))
    model, minfo = load_model(args.model)
    calib, calib_info = calibration_images(args.data, size, args.calib, split="train")
    check, check_info = calibration_images(args.data, size, args.check, split="val")
    with torch.inference_mode():
        reference = [model(x).argmax(1) for x in check]
    print(f"{len(calib)} calibration, {len(check)} check images at {size[0]}x{size[1]}",
          flush=True)

    def agree(f: Callable) -> float:
        with torch.inference_mode():
            return int8_mod.agreement(f, check, reference)

    rows: dict[str, dict[str, Any]] = {}
    cands: dict[str, Callable] = {"eager-fp32": model}
    rows["eager-fp32"] = {"agreement": 1.0}
    ort32 = _ort_fp32(model, size, max(args.threads))
    cands["onnxruntime-fp32"] = ort32
    rows["onnxruntime-fp32"] = {"agreement": agree(ort32)}
    int8 = _int8_at(max(args.threads), model, size, calib, check, args.min_agreement,
                    calib_info=calib_info)
    cands["int8-ort"] = int8
    rows["int8-ort"] = {k: int8.info[k] for k in ("agreement", "fallback", "fp32_nodes",
                                                  "fallback_steps", "quantize_s", "engine",
                                                  "weights", "reduce_range")}
    print("int8-ort", rows["int8-ort"]["agreement"], rows["int8-ort"]["fallback"], flush=True)
    nofb = _int8_at(max(args.threads), model, size, calib, check, 0.0)
    cands["int8-ort-nofallback"] = nofb
    rows["int8-ort-nofallback"] = {"agreement": nofb.info["agreement"]}
    vnni = int8_mod.has_vnni
    int8_mod.has_vnni = lambda: True  # 8-bit weights, as on a VNNI CPU
    try:
        full = _int8_at(max(args.threads), model, size, calib, check, 0.0)
    finally:
        int8_mod.has_vnni = vnni
    cands["int8-ort-8bit"] = full
    rows["int8-ort-8bit"] = {"agreement": full.info["agreement"]}
    if args.torchao:
        try:
            run, info = _torchao(model, calib, size)
            cands["torchao-pt2e"] = run
            rows["torchao-pt2e"] = {**info, "agreement": agree(run)}
        except Exception as e:  # report, do not hide the other engines' numbers
            rows["torchao-pt2e"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    for name, row in rows.items():
        print(f"{name:<22} agreement {row.get('agreement')}", flush=True)

    latency = {}
    for t in args.threads:
        for name in ("int8-ort", "int8-ort-nofallback", "int8-ort-8bit"):  # same model, t threads
            q = cands[name]
            cands[name] = int8_mod.OrtInt8Predictor(q._bytes, size, t, q.info)
        cands["onnxruntime-fp32"] = _ort_fp32(model, size, t)
        latency[str(t)] = _latency(cands, check[0], t, args.rounds, args.iters)
        for name, v in latency[str(t)].items():
            print(f"threads {t} {name:<22} {v['median_ms']:.1f} ms", flush=True)

    big = None
    if args.big:
        bsize = (1024, 2048)
        pub, _ = load_model("fasterseg_student")
        bcal, _ = calibration_images(None, bsize, 2, split="train")
        big = {"model": "fasterseg_student (random weights)", "size": list(bsize)}
        q = _int8_at(1, pub, bsize, bcal, None, 0.0)
        for t in args.threads:
            q = int8_mod.OrtInt8Predictor(q._bytes, bsize, t, q.info)
            bc = {"eager-fp32": pub, "onnxruntime-fp32": _ort_fp32(pub, bsize, t), "int8-ort": q}
            big[str(t)] = _latency(bc, bcal[0], t, args.rounds, max(1, args.iters // 2))
            for name, v in big[str(t)].items():
                print(f"1024x2048 threads {t} {name:<18} {v['median_ms']:.1f} ms", flush=True)

    env = collect_env()
    res = {
        "benchmark": "int8_engines",
        "model": args.model, "model_weights": minfo.get("weights"),
        "size": list(size), "calibration": calib_info,
        "check": {k: check_info[k] for k in ("source", "split", "images")},
        "min_agreement": args.min_agreement,
        "candidates": rows, "latency": latency, "big": big,
        "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "cpu_flags", "bf16_cpu",
                                             "torch", "onnxruntime", "git_commit")},
        "note": "shared 2-core machine under load: compare ratios within one run",
    }
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
