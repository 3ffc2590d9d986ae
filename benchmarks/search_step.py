"""One full-size co-search iteration (weight step + architecture step) of the FasterSeg supernet.

Paper supernet (L=16, Fch=12, ratios {4..12}, teacher + student), batch 2x3x160x320, OHEM on all
heads, latency term from a synthetic table. ``--mode ours`` times the shipped steps,
``fasterseg.search.steps.weight_step`` / ``arch_step`` over a ``SearchState`` (a backward per
pass, so graphs are freed pass by pass; the architecture step differentiates only the
architecture parameters; a cell's two candidate inputs go through each operator as one batch);
``--mode reference`` mimics the authors' execution (the four pass losses summed and back-propagated
once into weights and architecture alike, for both steps; one operator call per cell input).
``--cells`` overrides the cell execution (``per-input`` with ``--mode ours`` = ours before cell
batching). Same losses: the first iteration's step losses are recorded in the JSON.

``--amp both`` (default) measures fp32 and bf16 in the same run (a fresh, identically initialised
supernet each): ``by_amp`` holds each one's step times and first-iteration losses,
``bf16_speedup`` the fp32 / bf16 iteration-time ratio; the top-level ``weight_step_s`` /
``arch_step_s`` / ``amp`` are the first precision measured (fp32). ``--amp auto`` measures only
what ``search.amp=auto`` would choose on this machine. CPUs without native bf16 (no AVX-512 BF16
or AMX) run bf16 several times slower than fp32; with native bf16 it is expected to be faster.
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
    OMP_NUM_THREADS=2 python benchmarks/search_step.py --mode reference --amp off --json
    python benchmarks/search_step.py --layers 3 --size 64x128 --iters 1 --out runs/ss.json  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

PLAN = [("teacher", "max"), ("student", "gumbel"), ("student", "max"), ("student", "min")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["ours", "reference"], default="ours")
    ap.add_argument("--size", default="160x320")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--iters", type=int, default=2, help="timed iterations (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=["both", "off", "bf16", "auto"], default="both",
                    help="precision(s) to time: both = fp32 then bf16 in this run (default)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--cells", choices=["auto", "batched", "per-input"], default="auto",
                    help="cell execution (auto: batched for ours, per-input for reference)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/search_step_<mode>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    baseline_gb = _rss_gb()

    from fasterseg.supernet.cells import Cell

    cells = args.cells if args.cells != "auto" else ("batched" if args.mode == "ours" else "per-input")
    Cell.batch_inputs = cells == "batched"
    if args.amp == "both":
        amps = ["off", "bf16"]
    elif args.amp == "auto":
        from fasterseg.search.loop import resolve_search_amp

        amps = [resolve_search_amp("auto", torch.device("cpu"))]
    else:
        amps = [args.amp]
    h, w = (int(v) for v in args.size.lower().split("x"))
    by_amp, mem = {}, {}
    for amp in amps:
        by_amp[amp] = _time_one(args, amp, (h, w), mem)
        gc.collect()
    first = by_amp[amps[0]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    res = {
        "mode": args.mode, "size": [h, w], "batch": args.batch, "layers": args.layers,
        "threads": args.threads, "amp": amps[0], "amps": amps, "channels_last": args.channels_last,
        "cells": cells, **{k: first[k] for k in (
            "weight_step_s", "arch_step_s", "weight_step_cpu_s", "arch_step_cpu_s", "iteration_s",
            "weight_step_gflop", "arch_step_gflop", "all_weight_s", "all_arch_s",
            "first_arch_loss", "first_weight_loss")},
        "by_amp": by_amp,
        "bf16_speedup": (by_amp["off"]["iteration_s"] / by_amp["bf16"]["iteration_s"]
                         if {"off", "bf16"} <= set(by_amp) else None),
        "peak_rss_gb": peak * 1.073741824,
        "weight_params_m": mem["weight_params_m"],
        "baseline_rss_gb": baseline_gb, "model_rss_gb": mem["model_rss_gb"],
        "weights_gb": mem["weights_gb"], "fp32_floor_gb": baseline_gb + 3 * mem["weights_gb"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_avg_1m": os.getloadavg()[0],
    }
    tag = args.mode + ("" if amps == ["off"] else "_" + "_".join(amps)) + (
        "_cl" if args.channels_last else "")
    if args.cells != "auto":
        tag += "_" + cells.replace("-", "")
    out = Path(args.out or Path(__file__).parent / "results" / f"search_step_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    for amp, r in by_amp.items():
        print(f"{args.mode} {'fp32' if amp == 'off' else amp}: weight step {r['weight_step_s']:.2f} s, "
              f"arch step {r['arch_step_s']:.2f} s, first losses {r['first_weight_loss']:.4f} / "
              f"{r['first_arch_loss']:.4f}")
    print(f"peak RSS {res['peak_rss_gb']:.2f} GB (fp32 floor {res['fp32_floor_gb']:.2f} GB)")
    if args.json:
        print(json.dumps(res))
    return 0


def _time_one(args, amp: str, size: tuple[int, int], mem: dict) -> dict:
    """One warm-up (counting FLOPs) and ``--iters`` timed iterations in precision ``amp``."""
    from fasterseg.config.search import SearchConfig
    from fasterseg.config.search_space import SearchSpaceConfig
    from fasterseg.latency import LatencyTable, RelaxedLatency
    from fasterseg.latency.build import space_blocks
    from fasterseg.search.state import SearchState
    from fasterseg.search.steps import arch_step, weight_step
    from fasterseg.supernet import Supernet

    torch.manual_seed(0)
    h, w = size
    space = SearchSpaceConfig(num_layers=args.layers)
    net = Supernet(space, 19).train()
    table = LatencyTable({b.key: 0.1 for b in space_blocks(space, (1024, 2048))}, {"input_size": [1024, 2048]})
    lat = RelaxedLatency(table, space, None, space.student_stem_ratio, space.student_head_ratio)
    x = torch.randn(args.batch, 3, h, w)
    y = torch.randint(0, 19, (args.batch, h // 8, w // 8))
    if args.channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    # the paper's values: SGD 0.01 / momentum 0.9 / wd 5e-4 / clip 5, Adam 3e-4 (0.5, 0.999),
    # lambda 0.01 on the decoupled latency (0.001, 0.997, 0.0021) with softmax widths
    cfg = SearchConfig(latency_weight=0.01).resolved()
    state = SearchState.create(net, cfg, phase="search", latency=lat, amp=amp)
    weights = state.weights
    mem.setdefault("model_rss_gb", _rss_gb())
    mem.setdefault("weights_gb", sum(p.numel() * p.element_size() for p in weights) / 1e9)
    mem.setdefault("weight_params_m", sum(p.numel() for p in weights) / 1e6)

    if args.mode == "ours":
        def do_arch() -> float:
            return arch_step(state, x, y)[0]

        def do_weight() -> float:
            return weight_step(state, x, y, "search")
    else:
        do_arch, do_weight = _reference_steps(state, x, y, amp)

    times = {"arch": [], "weight": [], "arch_cpu": [], "weight_cpu": []}
    first_losses, gflop = {}, {}
    for i in range(args.iters + 1):
        for name, fn in (("arch", do_arch), ("weight", do_weight)):
            t, c = time.perf_counter(), time.process_time()
            if i == 0:  # the untimed warm-up also counts the step's FLOPs
                with FlopCounterMode(display=False) as counter:
                    loss = fn()
                gflop[name] = counter.get_total_flops() / 1e9
                first_losses[name] = loss
            else:
                fn()
                times[name].append(time.perf_counter() - t)
                times[f"{name}_cpu"].append(time.process_time() - c)
    return {
        "weight_step_s": min(times["weight"]), "arch_step_s": min(times["arch"]),
        "weight_step_cpu_s": min(times["weight_cpu"]), "arch_step_cpu_s": min(times["arch_cpu"]),
        "iteration_s": min(times["weight"]) + min(times["arch"]),
        "weight_step_gflop": gflop["weight"], "arch_step_gflop": gflop["arch"],
        "all_weight_s": times["weight"], "all_arch_s": times["arch"],
        "first_arch_loss": first_losses["arch"], "first_weight_loss": first_losses["weight"],
    }


def _reference_steps(state, x, y, amp: str):
    """The authors' execution: the four pass losses summed, one backward into everything."""
    from fasterseg.search.steps import student_latency

    net, seg, weights = state.model, state.seg, state.weights
    sgd, adams = state.sgd, list(state.arch_opts.values())
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext

    def arch() -> float:
        for o in adams:
            o.zero_grad(set_to_none=True)
        with ctx():
            loss = sum(seg(net(x, a, m), y) for a, m in PLAN)
        loss = loss + state.latency_weight * student_latency(state, with_grad=True)
        loss.backward()  # fills weight gradients too (then discarded), all graphs alive
        sgd.zero_grad(set_to_none=True)
        for o in adams:
            o.step()
        return float(loss.detach())

    def weight() -> float:
        sgd.zero_grad(set_to_none=True)
        with ctx():
            loss = sum(seg(net(x, a, m), y) for a, m in PLAN)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, state.cfg.grad_clip)
        sgd.step()
        return float(loss.detach())

    return arch, weight


def _rss_gb() -> float:
    """Current resident set size (Linux ``/proc``; the high-water mark elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


if __name__ == "__main__":
    raise SystemExit(main())
