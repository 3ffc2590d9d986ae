"""OpenVINO fp32 / bf16 / int8 against PyTorch eager fp32 and onnxruntime fp32, in one process.

Two cases (issue 12, item 3):

- ``published``: the published student (``fasterseg_student``, 19 classes, random weights: speed
  only) at 1024x2048;
- ``camvid``: the CamVid-trained searched student (``runs/camvid-cpu/student/best.pt``, 11
  classes) at 384x480, where the agreement with eager fp32 is measured on real CamVid val images
  and OpenVINO int8 is calibrated on CamVid train images (NNCF);
- ``camvid_baseline``: the same with the published FasterSeg student trained on CamVid
  (``runs/camvid-cpu/baseline/best.pt``).

int8 comes in three forms: ``openvino-int8-bc`` (every convolution int8, NNCF's fast bias
correction on: the former default), ``openvino-int8`` (every convolution int8, no bias
correction: today's plain path) and ``openvino-int8-fallback`` (what ``bench --auto`` builds: the
fp32 fallback search tuned on ``--tune-images`` more CamVid train images up to the 99.5 % floor +
``TUNE_MARGIN``); the verdict is the agreement on the val images, as in ``bench --auto``.

Every path is prepared first, then timed in interleaved rounds (each round times every path for
``--seconds / --rounds``), so the load of other processes on a shared machine hits all of them
alike; medians are reported, with the ratio to eager fp32. Agreement: the share of pixels whose
predicted class (argmax) equals eager fp32's, over ``--check-images`` images (CamVid val when
``../shared/data/camvid`` exists, else generated street scenes). OpenVINO fp32 is also built
through the ONNX export (``openvino-fp32-onnx``) to compare the two conversion routes.

    OMP_NUM_THREADS=2 python benchmarks/openvino_paths.py [--cases camvid,published]
        [--threads 2] [--seconds 20] [--rounds 4] [--calib-images N] [--check-images N]
        [--tune-images 4] [--skip openvino-fp32-onnx,...]

Prints a table per case and writes benchmarks/results/openvino_paths.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
# OMP_WAIT_POLICY is left to the caller: PASSIVE helps on a loaded machine but slows a quiet
# 2-thread run by up to 1.5x; the result records which policy the numbers came from.

import torch  # noqa: E402

from fasterseg.bench.runner import percentile  # noqa: E402
from fasterseg.deploy import openvino as fov  # noqa: E402
from fasterseg.deploy.auto import TUNE_MARGIN  # noqa: E402
from fasterseg.deploy.calibration import calibration_images  # noqa: E402
from fasterseg.deploy.paths import OrtPredictor  # noqa: E402
from fasterseg.latency.backends import (  # noqa: E402
    device_name,
    export_onnx_bytes,
    library_versions,
    set_threads,
)
from fasterseg.models import load_model  # noqa: E402
from fasterseg.utils.io import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "camvid"
DATA_SPEC = "camvid:../shared/data/camvid"
CASES = {  # name -> (model, size, what the agreement means, calibration / check images)
    "camvid": ("runs/camvid-cpu/student/best.pt", (384, 480), "trained", 32, 20),
    "camvid_baseline": ("runs/camvid-cpu/baseline/best.pt", (384, 480), "trained", 32, 20),
    "published": ("fasterseg_student", (1024, 2048), "random weights", 8, 2),
}
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8",
         "amx_tile")


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide bf16/int8 speed (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in FLAGS if f in have]
    except OSError:
        pass
    return []


class Eager:
    name, backend, dtype = "eager-fp32", "torch", "fp32"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.info = model, {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


def openvino_via_onnx(model: torch.nn.Module, size: tuple[int, int], threads: int):
    """OpenVINO fp32 converted from the ONNX export instead of the PyTorch front end."""
    import openvino as ov

    ov_model = ov.convert_model(io.BytesIO(export_onnx_bytes(model, [torch.zeros(1, 3, *size)])))
    pred = fov.OpenVINOPredictor(ov_model, "fp32", size, threads,
                                 {"convert": "ONNX export -> openvino.convert_model"})
    pred.name = "openvino-fp32-onnx"
    return pred


def int8_bias_corrected(model: torch.nn.Module, size: tuple[int, int], threads: int, calib):
    """OpenVINO int8 as it was before the fallback: every convolution, fast bias correction."""
    ov_model = fov.quantize_nncf(fov.convert(model, size), calib, bias_correction=True)
    pred = fov.OpenVINOPredictor(ov_model, "int8", size, threads,
                                 {"bias_correction": True, "calibration_images": len(calib)})
    pred.name = "openvino-int8-bc"
    return pred


def time_for(pred, x: torch.Tensor, seconds: float, min_reps: int) -> list[float]:
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        pred(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_case(name: str, args: argparse.Namespace) -> dict:
    spec, size, meaning, n_calib, n_check = CASES[name]
    model, minfo = load_model(REPO / spec if spec.endswith(".pt") else spec)
    model = model.eval()
    real = DATA.is_dir()
    data = DATA_SPEC if real else None
    n_calib = args.calib_images or n_calib
    calib, cinfo = calibration_images(data, size, n_calib + args.tune_images, split="train",
                                      seed=0)
    calib, tune = calib[:n_calib], calib[n_calib:]
    cinfo.update(images=len(calib), tune_images=len(tune))
    check, kinfo = calibration_images(data, size, args.check_images or n_check,
                                       split="val", seed=1)
    cinfo.pop("files", None)
    kinfo.pop("files", None)
    print(f"{name}: {spec} {size[0]}x{size[1]}, {minfo['num_classes']} classes "
          f"({meaning}); calibration {cinfo['source']}:{cinfo['split']}, check "
          f"{kinfo['source']}:{kinfo['split']} x{len(check)}", flush=True)

    builders = {
        "eager-fp32": lambda: Eager(model),
        "onnxruntime-fp32": lambda: OrtPredictor(model, size, args.threads, torch.device("cpu")),
        "openvino-fp32": lambda: fov.compile_openvino(model, size, "fp32", threads=args.threads),
        "openvino-fp32-onnx": lambda: openvino_via_onnx(model, size, args.threads),
        "openvino-bf16": lambda: fov.compile_openvino(model, size, "bf16", threads=args.threads),
        "openvino-int8-bc": lambda: int8_bias_corrected(model, size, args.threads, calib),
        "openvino-int8": lambda: fov.compile_openvino(model, size, "int8", threads=args.threads,
                                                      calib=calib),
        "openvino-int8-fallback": lambda: fov.compile_openvino(
            model, size, "int8", threads=args.threads, calib=calib, check=tune,
            min_agreement=args.min_agreement + TUNE_MARGIN),
    }
    preds, rows = {}, {}
    refs = [Eager(model)(x).argmax(1) for x in check]
    for key, build in builders.items():
        if key in args.skip:
            continue
        t0 = time.perf_counter()
        pred = build()
        prep = time.perf_counter() - t0
        agree = statistics.fmean(float((pred(x).argmax(1) == r).float().mean())
                                 for x, r in zip(check, refs))
        preds[key] = pred
        rows[key] = {"backend": pred.backend, "dtype": pred.dtype, "agreement": agree,
                     "prepare_s": prep, "info": pred.info}
        print(f"  prepared {key:<20} in {prep:6.1f} s, agreement {100 * agree:6.2f}%", flush=True)

    x = check[0]
    times: dict[str, list[float]] = {k: [] for k in preds}
    for p in preds.values():  # warm-up: first inferences allocate and pack weights
        time_for(p, x, 0.0, 2)
    for _ in range(args.rounds):
        for k, p in preds.items():
            times[k] += time_for(p, x, args.seconds / args.rounds, args.min_reps)
    base = statistics.median(times["eager-fp32"])
    for k, t in times.items():
        med = statistics.median(t)
        rows[k].update(latency_ms=med, p25_ms=percentile(t, 25), p75_ms=percentile(t, 75),
                       runs=len(t), speedup_vs_eager=base / med)
    print(f"  {'path':<20}{'median ms':>11}{'x eager':>9}{'agree %':>9}  runs")
    for k, r in rows.items():
        print(f"  {k:<20}{r['latency_ms']:11.1f}{r['speedup_vs_eager']:9.2f}"
              f"{100 * r['agreement']:9.2f}  {r['runs']}")
    return {"model": spec, "size": list(size), "num_classes": minfo["num_classes"],
            "weights": minfo["weights"], "calibration": cinfo, "check": kinfo,
            "paths": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="camvid,published")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="timing per path, all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--min-reps", type=int, default=2, help="runs per path per round at least")
    ap.add_argument("--calib-images", type=int, default=None,
                    help="int8 calibration images (default: 32 at 384x480, 8 at 1024x2048)")
    ap.add_argument("--check-images", type=int, default=None,
                    help="agreement images (default: 20 at 384x480, 2 at 1024x2048)")
    ap.add_argument("--tune-images", type=int, default=4,
                    help="train images the int8 fallback search tunes on (bench --auto: 4)")
    ap.add_argument("--min-agreement", type=float, default=0.995,
                    help="the floor of the int8 fallback (+ TUNE_MARGIN while tuning)")
    ap.add_argument("--skip", default="", help="comma-separated paths not to build")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "openvino_paths.json"))
    args = ap.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    set_threads(args.threads)
    versions = {**library_versions(), "openvino": fov.openvino_version(),
                "nncf": fov.nncf_version()}
    result = {"device": device_name("cpu"), "cpu_flags": cpu_flags(), "threads": args.threads,
              "cores": os.cpu_count(), "versions": versions,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
              "seconds_per_path": args.seconds,
              "rounds": args.rounds, "note": "shared machine under load: compare ratios, "
              "absolute times are slow and noisy", "cases": {}}
    for case in args.cases.split(","):
        result["cases"][case] = run_case(case, args)
        write_json(args.out, result)  # keep what is done if a later case is interrupted
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
