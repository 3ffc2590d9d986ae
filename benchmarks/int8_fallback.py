"""int8 calibration methods and fp32-fallback searches compared on real data.

Usage:
    python benchmarks/int8_fallback.py [--model runs/camvid-cpu-cw/student/best.pt]
        [--data camvid:../shared/data/camvid] [--size 384x480] [--calib 16] [--tune 4]
        [--check 16] [--methods minmax,percentile:99.999,percentile:99.99,entropy]
        [--search minmax] [--ends] [--threads 1] [--rounds 5] [--iters 5]

As ``bench --auto`` does it: int8 calibrated on ``--calib`` CamVid train images, the fp32
fallback tuned on the next ``--tune`` train images to ``--floor`` + 0.2 points, the verdict
(agreement of argmax with the fp32 model) on ``--check`` CamVid val images (another split).

1. ``methods``: every calibration method of ``--methods``, every convolution int8 (the final
   resize fp32): agreement on the tuning and the val images, calibration time;
2. ``search``: for each method of ``--search``, one sensitivity scan (each convolution alone in
   fp32) and the fallback searches of ``fasterseg.deploy.fallback`` ranked by gain and by gain
   per MAC; ``--ends`` adds the search used before (the two ends of the graph, greedily);
3. ``latency``: onnxruntime fp32 and every int8 model found, interleaved in this ONE process
   (``--rounds`` rounds of ``--iters`` runs, median of per-round medians): ratios, not ms,
   on a loaded machine.

Writes ``benchmarks/results/int8_fallback.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]


def _ends_greedy(build: Callable, convs: list[str], forced: list[str], floor: float,
                 max_fallback: int = 8) -> dict[str, Any]:
    """The search before (fasterseg 5c1198a): each step tries the next convolution from each end
    of the graph and keeps the better one, until the floor or ``max_fallback`` steps."""
    excluded, added = list(forced), []
    best_agree, best = build(excluded)
    best_nodes, builds = list(excluded), 1
    while best_agree < floor and len(added) < max_fallback:
        ends = (next((c for c in reversed(convs) if c not in excluded), None),
                next((c for c in convs if c not in excluded), None))
        tried = list(dict.fromkeys(c for c in ends if c))
        if not tried:
            break
        results = [(*build([*excluded, c]), c) for c in tried]
        builds += len(tried)
        agree, pred, cand = max(results, key=lambda r: r[0])
        added.append(cand)
        excluded.append(cand)
        if agree > best_agree:
            best_agree, best, best_nodes = agree, pred, list(excluded)
    return {"agreement_tune": best_agree, "fp32": best_nodes, "builds": builds, "model": best}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/camvid-cpu-cw/student/best.pt")
    p.add_argument("--data", default="camvid:../shared/data/camvid")
    p.add_argument("--size", default="384x480")
    p.add_argument("--calib", type=int, default=16)
    p.add_argument("--tune", type=int, default=4)
    p.add_argument("--check", type=int, default=16)
    p.add_argument("--floor", type=float, default=0.995)
    p.add_argument("--methods", default="minmax,percentile:99.999,percentile:99.99,entropy")
    p.add_argument("--search", default="best",
                   help="methods to search a fallback for; best: the one with the highest "
                        "agreement on the tuning images")
    p.add_argument("--before", default=None,
                   help="a bench --auto choice file: its int8 fp32_nodes (found by the search "
                        "used before, same images) are rebuilt for agreement and speed")
    p.add_argument("--ends", action="store_true", help="also run the search used before")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "benchmarks/results/int8_fallback.json"))
    args = p.parse_args(argv)

    from fasterseg.deploy import fallback
    from fasterseg.deploy import int8 as int8_mod
    from fasterseg.deploy.auto import TUNE_MARGIN
    from fasterseg.deploy.calibration import calibration_images
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.utils.environment import collect_env
    from fasterseg.utils.io import write_json

    torch.set_num_threads(args.threads)
    size = tuple(int(s) for s in args.size.split("x"))
    model, _ = load_model(args.model)
    model = copy.deepcopy(model).eval().float()
    imgs, calib_info = calibration_images(args.data, size, args.calib + args.tune, split="train")
    calib, tune = imgs[:args.calib], imgs[args.calib:]
    check, check_info = calibration_images(args.data, size, args.check, split="val")
    with torch.inference_mode():
        ref_tune = [model(x).argmax(1) for x in tune]
        ref_check = [model(x).argmax(1) for x in check]
    tune_floor = min(1.0, args.floor + TUNE_MARGIN)
    reduce_range = not int8_mod.has_vnni()
    res: dict[str, Any] = {
        "benchmark": "int8_fallback", "model": args.model, "size": list(size),
        "calibration": {k: calib_info.get(k) for k in ("source", "split")} | {
            "images": len(calib), "tune_images": len(tune)},
        "check": {k: check_info.get(k) for k in ("source", "split")} | {"images": len(check)},
        "floor": args.floor, "tune_floor": tune_floor, "reduce_range": reduce_range,
        "threads": args.threads, "methods": {}, "search": {},
    }
    models: dict[str, Any] = {}

    def on_check(pred) -> float:
        return int8_mod.agreement(pred, check, ref_check)

    with tempfile.TemporaryDirectory(prefix="int8-fallback-") as tmp:
        builders = {}
        for method in args.methods.split(","):
            d = Path(tmp) / method.replace(":", "-")
            d.mkdir()
            b = int8_mod._OrtBuilder(model, size, calib, d, calibration=method,
                                     threads=args.threads, reduce_range=reduce_range)
            t0 = time.perf_counter()
            q = b.build(b.final)  # the first build calibrates
            row = {"calibrate_s": time.perf_counter() - t0,
                   "agreement_tune": int8_mod.agreement(q, tune, ref_tune),
                   "agreement_check": on_check(q), "convs": len(b.convs)}
            res["methods"][method] = row
            models[f"{method} all-int8"] = q
            builders[method] = b
            print(f"{method:<18} all int8: tune {row['agreement_tune']:.5f} "
                  f"val {row['agreement_check']:.5f} ({row['calibrate_s']:.0f} s)", flush=True)
            write_json(args.out, res)

        if args.before:
            import json

            choice = json.loads(Path(args.before).read_text())
            row = next(r for r in choice["candidates"] if r["name"] == "int8")
            nodes = row["info"]["fp32_nodes"]
            b = next(iter(builders.values()))  # the first method: minmax, as before
            q = b.build(nodes)
            models["before (ends search)"] = q
            res["before"] = {"choice": args.before, "fp32": nodes,
                             "calibration": next(iter(builders)),
                             "agreement_tune": int8_mod.agreement(q, tune, ref_tune),
                             "agreement_check": on_check(q),
                             "fp32_macs": sum(b.macs.get(n, 0) for n in nodes),
                             "macs": sum(b.macs.values())}
            print(f"before: {nodes} val {res['before']['agreement_check']:.5f}", flush=True)
        search = args.search.split(",")
        if args.search == "best":
            search = [max(res["methods"], key=lambda m: res["methods"][m]["agreement_tune"])]
        res["searched"] = search
        for method in filter(None, search):
            b = builders[method]
            forced = list(b.final)

            def build(exclude: list[str], b=b) -> tuple[float, Any]:
                pred = b.build(exclude)
                return int8_mod.agreement(pred, tune, ref_tune), pred

            out: dict[str, Any] = {}
            t0 = time.perf_counter()
            base = build(forced)[0]
            scan = {c: build([*forced, c])[0] for c in b.convs}
            out["scan_s"] = time.perf_counter() - t0
            out["scan_builds"] = len(scan) + 1
            out["base_tune"] = base
            out["sensitivity"] = scan
            out["macs"] = b.macs
            for label, cost in (("gain", None), ("gain-per-mac", b.macs)):
                t0 = time.perf_counter()
                found = fallback.search(build, b.convs, floor=tune_floor, forced=forced,
                                        score_one=scan.__getitem__, cost=cost)
                out[label] = {"fp32": found.fp32, "kept": found.kept,
                              "agreement_tune": found.agreement, "reached_tune": found.reached,
                              "steps": found.steps, "order": found.order,
                              "builds_after_scan": found.builds,
                              "search_s_after_scan": time.perf_counter() - t0,
                              "fp32_macs": sum(b.macs.get(n, 0) for n in found.fp32),
                              "agreement_check": on_check(found.model)}
                models[f"{method} {label}"] = found.model
                print(f"{method} {label}: {found.kept} tune {found.agreement:.5f} "
                      f"val {out[label]['agreement_check']:.5f}", flush=True)
                write_json(args.out, res | {"search": {**res["search"], method: out}})
            if args.ends:
                t0 = time.perf_counter()
                e = _ends_greedy(build, b.convs, forced, tune_floor)
                models[f"{method} ends (before)"] = e.pop("model")
                e.update(search_s=time.perf_counter() - t0,
                         agreement_check=on_check(models[f"{method} ends (before)"]),
                         fp32_macs=sum(b.macs.get(n, 0) for n in e["fp32"]))
                out["ends (before)"] = e
                print(f"{method} ends: {e['fp32']} tune {e['agreement_tune']:.5f} "
                      f"val {e['agreement_check']:.5f}", flush=True)
            res["search"][method] = out
            write_json(args.out, res)

    # latency: every model found and onnxruntime fp32, interleaved in this process
    from fasterseg.deploy.paths import OrtPredictor

    cands: dict[str, Callable] = {"onnxruntime-fp32": OrtPredictor(model, size, args.threads,
                                                                   torch.device("cpu"))}
    for name, q in models.items():
        cands[name] = q
    per_round: dict[str, list[float]] = {k: [] for k in cands}
    x = check[0]
    with torch.inference_mode():
        for f in cands.values():
            f(x)
        for _ in range(args.rounds):
            for name, f in cands.items():
                times = []
                for _ in range(args.iters):
                    t = time.perf_counter()
                    f(x)
                    times.append(time.perf_counter() - t)
                per_round[name].append(1000 * statistics.median(times))
    ref_ms = statistics.median(per_round["onnxruntime-fp32"])
    res["latency"] = {n: {"median_ms": statistics.median(v), "per_round_ms": v,
                          "x_onnxruntime_fp32": statistics.median(v) / ref_ms}
                      for n, v in per_round.items()}
    for n, v in res["latency"].items():
        print(f"{n:<28} {v['median_ms']:.1f} ms  {v['x_onnxruntime_fp32']:.2f}x ort fp32",
              flush=True)
    env = collect_env()
    res["machine"] = {k: env.get(k) for k in ("cpu", "cpu_count", "cpu_flags", "torch",
                                              "onnxruntime", "git_commit")}
    res["note"] = "shared 2-core machine under load: compare ratios within one run"
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
