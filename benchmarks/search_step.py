"""One full-size co-search iteration (weight step + architecture step) of the FasterSeg supernet.

Paper supernet (L=16, Fch=12, ratios {4..12}, teacher + student), batch 2x3x160x320, OHEM on all
heads, latency term from a synthetic table. ``--mode ours`` is the search loop's execution (a
backward per pass, so graphs are freed pass by pass; the architecture step differentiates only the
architecture parameters; a cell's two candidate inputs go through each operator as one batch);
``--mode reference`` mimics the authors' execution (the four pass losses summed and back-propagated
once into weights and architecture alike, for both steps; one operator call per cell input).
``--cells`` overrides the cell execution (``per-input`` with ``--mode ours`` = ours before cell
batching). Same losses: the first iteration's step losses are recorded in the JSON.
Peak RSS is the process high-water mark, so run one mode per process. The JSON also breaks memory
down: ``baseline_rss_gb`` (the process with torch imported, before the supernet),
``model_rss_gb`` (after building it) and ``fp32_floor_gb`` = baseline + 3 x the weights (weights,
their gradients and the SGD momentum all live at once, because the gradient-norm clip needs every
gradient before any update): no exact fp32 execution can peak below it. ``weight_step_gflop`` and
``arch_step_gflop`` count the FLOPs of each step (``torch.utils.flop_counter``, in the untimed
warm-up iteration).

Run both modes back to back on a quiet machine with OpenMP's default wait policy (the setting of
the issue's reference numbers). ``OMP_WAIT_POLICY=PASSIVE``, which we use on a loaded machine,
makes both slower (ours about 1.8x, the reference about 1.6x: thousands of small ops each wake
the second thread).

    OMP_NUM_THREADS=2 python benchmarks/search_step.py --json
    OMP_NUM_THREADS=2 python benchmarks/search_step.py --mode reference --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["ours", "reference"], default="ours")
    ap.add_argument("--size", default="160x320")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--iters", type=int, default=2, help="timed iterations (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=["off", "bf16"], default="off")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--cells", choices=["auto", "batched", "per-input"], default="auto",
                    help="cell execution (auto: batched for ours, per-input for reference)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/search_step_<mode>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    baseline_gb = _rss_gb()

    from fasterseg.config.search_space import SearchSpaceConfig
    from fasterseg.engine.search_loop import SegObjective, relaxed_latency
    from fasterseg.latency import LatencyTable, RelaxedLatency
    from fasterseg.latency.build import space_blocks
    from fasterseg.supernet import Supernet
    from fasterseg.supernet.cells import Cell

    cells = args.cells if args.cells != "auto" else ("batched" if args.mode == "ours" else "per-input")
    Cell.batch_inputs = cells == "batched"

    h, w = (int(v) for v in args.size.lower().split("x"))
    space = SearchSpaceConfig(num_layers=args.layers)
    net = Supernet(space, 19).train()
    table = LatencyTable({b.key: 0.1 for b in space_blocks(space, (1024, 2048))}, {"input_size": [1024, 2048]})
    lat = RelaxedLatency(table, space, None, space.student_stem_ratio, space.student_head_ratio)
    x = torch.randn(args.batch, 3, h, w)
    y = torch.randint(0, 19, (args.batch, h // 8, w // 8))
    if args.channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    model_gb = _rss_gb()
    weights_gb = sum(p.numel() * p.element_size() for p in weights) / 1e9
    sgd = torch.optim.SGD(weights, lr=0.01, momentum=0.9, weight_decay=5e-4)
    adam = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999))
    seg = SegObjective(0.7, 1 / 16)
    plan = [("teacher", "max"), ("student", "gumbel"), ("student", "max"), ("student", "min")]
    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if args.amp == "bf16"
           else contextlib.nullcontext())

    def latency():
        return relaxed_latency(lat, net.arch["student"], mode="decoupled", weights=(0.001, 0.997, 0.0021),
                               gamma="softmax", tau=1.0, with_grad=True)

    def arch_step() -> float:
        adam.zero_grad(set_to_none=True)
        if args.mode == "reference":
            with amp:
                loss = sum(seg(net(x, a, m), y) for a, m in plan) + 0.01 * latency()
            loss.backward()  # fills weight gradients too (then discarded), all graphs alive
            sgd.zero_grad(set_to_none=True)
            adam.step()
            return float(loss.detach())
        total = 0.0
        for i, (a, m) in enumerate(plan):
            with amp:
                loss = seg(net(x, a, m), y)
            if i == len(plan) - 1:
                loss = loss + 0.01 * latency()
            loss.backward(inputs=net.arch_parameters(a))
            total += float(loss.detach())
        adam.step()
        return total

    def weight_step() -> float:
        sgd.zero_grad(set_to_none=True)
        if args.mode == "reference":
            with amp:
                loss = sum(seg(net(x, a, m), y) for a, m in plan)
            loss.backward()
            total = float(loss.detach())
        else:
            total = 0.0
            for a, m in plan:
                with amp:
                    loss = seg(net(x, a, m), y)
                loss.backward(inputs=weights)
                total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        sgd.step()
        return total

    times = {"arch": [], "weight": [], "arch_cpu": [], "weight_cpu": []}
    first_losses = {}
    gflop = {}
    for i in range(args.iters + 1):
        for name, fn in (("arch", arch_step), ("weight", weight_step)):
            t, c = time.perf_counter(), time.process_time()
            if i == 0:  # the untimed warm-up also counts the step's FLOPs
                with FlopCounterMode(display=False) as counter:
                    loss = fn()
                gflop[name] = counter.get_total_flops() / 1e9
                first_losses[name] = loss
            else:
                loss = fn()
            if i > 0:
                times[name].append(time.perf_counter() - t)
                times[f"{name}_cpu"].append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    res = {
        "mode": args.mode, "size": [h, w], "batch": args.batch, "layers": args.layers,
        "threads": args.threads, "amp": args.amp, "channels_last": args.channels_last, "cells": cells,
        "weight_step_s": min(times["weight"]), "arch_step_s": min(times["arch"]),
        "weight_step_cpu_s": min(times["weight_cpu"]), "arch_step_cpu_s": min(times["arch_cpu"]),
        "iteration_s": min(times["weight"]) + min(times["arch"]),
        "weight_step_gflop": gflop["weight"], "arch_step_gflop": gflop["arch"],
        "all_weight_s": times["weight"], "all_arch_s": times["arch"],
        "peak_rss_gb": peak * 1.073741824,
        "weight_params_m": sum(p.numel() for p in weights) / 1e6,
        "baseline_rss_gb": baseline_gb, "model_rss_gb": model_gb, "weights_gb": weights_gb,
        "fp32_floor_gb": baseline_gb + 3 * weights_gb,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "first_arch_loss": first_losses["arch"], "first_weight_loss": first_losses["weight"],
        "load_avg_1m": os.getloadavg()[0],
    }
    tag = args.mode + ("_bf16" if args.amp == "bf16" else "") + ("_cl" if args.channels_last else "")
    if args.cells != "auto":
        tag += "_" + cells.replace("-", "")
    out = Path(args.out or Path(__file__).parent / "results" / f"search_step_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"{tag}: weight step {res['weight_step_s']:.2f} s, arch step {res['arch_step_s']:.2f} s, "
          f"peak RSS {res['peak_rss_gb']:.2f} GB (fp32 floor {res['fp32_floor_gb']:.2f} GB)")
    if args.json:
        print(json.dumps(res))
    return 0


def _rss_gb() -> float:
    """Current resident set size (Linux ``/proc``; the high-water mark elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


if __name__ == "__main__":
    raise SystemExit(main())
