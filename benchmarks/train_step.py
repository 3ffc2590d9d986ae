"""Time one CPU training step (forward, OHEM + aux losses, backward, SGD) and what makes it cheaper.

Two changes that leave the results unchanged, timed against the code before them in one run:

- the OHEM loss in one pass with a closed-form backward (``fasterseg.engine.losses``) against
  the plain autograd formulation (``ohem_reference``): at full resolution the three heads'
  full-size logits (8 x 11 x 352 x 480 each) made the loss a third of the step;
- glibc's allocator keeping freed memory (``fasterseg.bench.tuning.tune_malloc``, now applied by
  ``train``, ``search`` and ``eval`` on a CPU): without it every step page-faults its big
  activations in again.

Phase 1 times the reference and the fused loss with the default allocator, phase 2 the same
after tuning it (it cannot be undone in a process), each in alternating rounds so that the load
of other processes hits both alike. Inputs are random images and labels (timing only).

    OMP_NUM_THREADS=2 python benchmarks/train_step.py [--arch fasterseg_student|ARCH.json]
        [--crop 352x480] [--batch 8] [--threads 2] [--rounds 6] [--steps 3]

Prints a table and writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from fasterseg.bench import tuning  # noqa: E402
from fasterseg.deploy.auto import machine_info  # noqa: E402
from fasterseg.engine.losses import OhemCrossEntropy, SegLoss, ohem_reference  # noqa: E402
from fasterseg.models import create_model  # noqa: E402
from fasterseg.utils.io import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class _ReferenceOhem(OhemCrossEntropy):
    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ohem_reference(logits, labels, self.thresh, self.min_kept_ratio,
                              self.ignore_index, self.class_weight)


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="fasterseg_student", help="model name or arch JSON")
    ap.add_argument("--crop", default="352x480", help="training crop HxW")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per phase")
    ap.add_argument("--steps", type=int, default=3, help="steps per round (median taken)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.crop.lower().split("x"))
    g = torch.Generator().manual_seed(0)
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    x = torch.randn(args.batch, 3, h, w, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch, h, w), generator=g)
    y[:, : h // 8] = 255  # some void, like real labels
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=args.classes).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    weight = torch.linspace(0.5, 3.0, args.classes)
    losses = {
        "reference": SegLoss(_ReferenceOhem(0.7, 1 / 16, 255, weight), 0.2),
        "fused": SegLoss(OhemCrossEntropy(0.7, 1 / 16, 255, weight), 0.2),
    }

    def step_time(name: str) -> float:
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss, _ = losses[name](model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    step_time("reference")  # warm-up: first-call allocations and oneDNN primitive creation
    phases: dict[str, dict[str, list[float]]] = {}
    for phase in ("default_malloc", "tuned_malloc"):
        if phase == "tuned_malloc" and not tuning.tune_malloc():
            print("malloc tuning unavailable here (not glibc): phase 2 skipped")
            break
        res: dict[str, list[float]] = {"reference": [], "fused": []}
        for r in range(args.rounds):
            order = ("reference", "fused") if r % 2 == 0 else ("fused", "reference")
            for name in order:
                res[name].append(step_time(name))
        phases[phase] = res

    rows = {f"{phase}/{name}": statistics.median(v)
            for phase, res in phases.items() for name, v in res.items()}
    base = rows["default_malloc/reference"]
    print(f"{args.arch} batch {args.batch} crop {h}x{w}, {args.threads} threads, "
          f"{'channels_last' if fmt is torch.channels_last else 'NCHW'}: seconds per step "
          f"(median of {args.rounds} rounds)")
    for k, v in rows.items():
        print(f"  {k:28s} {v:.3f} s   {base / v:.2f}x")
    out = {
        "what": "CPU training step (forward, OHEM main + 2 aux at full resolution, backward, "
                "SGD): reference loss vs one-pass loss, default vs tuned malloc",
        "arch": args.arch, "batch": args.batch, "crop": [h, w], "threads": args.threads,
        "channels_last": fmt is torch.channels_last, "rounds": args.rounds,
        "steps_per_round": args.steps,
        "seconds_per_step": rows,
        "per_round": {p: r for p, r in phases.items()},
        "speedup_vs_before": {k: base / v for k, v in rows.items()},
        "machine": machine_info("cpu"),
        "load_average_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__,
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
