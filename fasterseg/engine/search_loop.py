"""The architecture search loop: ``search(cfg, run_dir, ...)`` (paper appendix F/H, facts 4-6).

Two stages over one supernet:

1. ``pretrain``: weights only, on trainA; per iteration the sandwich rule (widest, narrowest and
   ``sandwich_random`` random widths) with the teacher's stem and heads (as the authors do).
2. ``search``: per iteration an architecture step on a trainB batch (one Adam per architecture;
   teacher: its seg loss; student: seg loss of the Gumbel-sampled, widest and narrowest passes plus
   ``lambda * LAT``), then a weight step on a trainA batch (teacher widest + student Gumbel,
   widest, narrowest; SGD, grad clip) - the 4-step co-search of appendix F with the authors' loss.

Every pass runs its own backward right away (graphs are freed pass by pass), the architecture step
differentiates only the architecture parameters (no weight gradients are computed for it) and the
weight step only the weights. Each epoch validates every prediction head of both architectures,
logs entropies / skip share / latency (``metrics.jsonl``, ``search.png``), warns on collapse and
writes ``arch_params.json``. ``last.pt`` holds everything needed to resume exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from fasterseg.config.core import to_dict
from fasterseg.config.search import SearchRunConfig
from fasterseg.engine import checkpoint as ckpt_io
from fasterseg.engine import distributed as D
from fasterseg.engine import rundir
from fasterseg.engine.amp import autocast
from fasterseg.engine.search_monitor import (
    collapse_warning,
    describe,
    epoch_record,
    plot_history,
    validate_heads,
)
from fasterseg.engine.cost import CostMeter
from fasterseg.engine.losses import OhemCrossEntropy
from fasterseg.engine.seed import seed_everything, set_deterministic
from fasterseg.errors import UserError
from fasterseg.supernet import ARCHS, Supernet, downsample_labels

logger = logging.getLogger(__name__)

Stage = Literal["pretrain", "search", "all"]
PHASES = ("pretrain", "search")
CKPT_KIND = "fasterseg-search"  # checked by ckpt_io.load_resume_state(run_dir, "search")


class SearchDiverged(UserError):
    """A loss became NaN/inf: the search stops, the last good checkpoint is kept."""


@dataclass
class SearchResult:
    run_dir: Path
    model: Supernet
    phase: str
    epoch: int  # completed epochs in ``phase``
    step: int
    latency_weight: float
    branch_scores: dict
    history: list[dict] = field(default_factory=list)
    cost: dict | None = None
    stopped_early: bool = False


# ------------------------------------------------------------------------------ building blocks
class SegObjective:
    """Sum over all prediction heads of OHEM at 1/8 resolution (labels downsampled, nearest)."""

    def __init__(self, thresh: float, min_kept_ratio: float, ignore_index: int = 255):
        self.ohem = OhemCrossEntropy(thresh, min_kept_ratio, ignore_index)

    def __call__(self, outputs: dict[str, torch.Tensor], labels8: torch.Tensor) -> torch.Tensor:
        return sum(self.ohem(o.float(), labels8) for o in outputs.values())


def load_latency_model(cfg: SearchRunConfig, lut: str | None, device: torch.device):
    """(student RelaxedLatency, teacher RelaxedLatency, table path) or (None, None, None)."""
    s = cfg.search
    path = lut or s.lut
    if not path:
        if s.latency_weight > 0 and s.search_epochs > 0:
            raise UserError(
                "search.latency_weight > 0 needs a latency table: run `fasterseg latency build "
                "--space CONFIG --size 1024x2048 -o lut.json` (CONFIG = this search config) and pass "
                "--lut lut.json, or set search.latency_weight=0"
            )
        return None, None, None
    from fasterseg.latency import RelaxedLatency, load_table

    table = load_table(path)
    size = tuple(s.latency_size) if s.latency_size else None
    sp = cfg.space
    try:
        student = RelaxedLatency(table, sp, size, sp.student_stem_ratio, sp.student_head_ratio)
        teacher = RelaxedLatency(table, sp, size, sp.teacher_stem_ratio, sp.teacher_head_ratio)
    except KeyError as e:
        raise UserError(f"latency table {path} does not cover this search space: {e}") from None
    return student.to(device), teacher.to(device), str(path)


def relaxed_latency(
    lat_model, params, *, mode: str, weights, gamma: str, tau: float, with_grad: bool
) -> torch.Tensor:
    """Latency (ms) of one architecture from normalised parameters (eq. 3 or the naive term)."""
    from fasterseg.supernet.arch_params import gumbel_softmax_hard

    ctx = contextlib.nullcontext() if with_grad else torch.no_grad()
    with ctx:
        alphas = [torch.softmax(a, -1).double() for a in params.alpha]
        betas = [None] + [torch.softmax(b, -1).double() for b in params.beta]
        gammas = None
        if params.has_gamma:
            if gamma == "gumbel":
                gammas = [gumbel_softmax_hard(g, tau).double() for g in params.gamma]
            else:
                gammas = [torch.softmax(g, -1).double() for g in params.gamma]
        return lat_model(alphas, betas, gammas, mode=mode, weights=tuple(weights)).float()


def split_indices(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint random halves trainA (weights) / trainB (architecture) of ``n`` samples."""
    if n < 2:
        raise UserError(f"the training split needs at least 2 samples for trainA/trainB, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    half = n // 2
    return sorted(perm[:half]), sorted(perm[half:])


class IndexSubset(torch.utils.data.Dataset):
    """A subset that forwards ``(index, aug_seed)`` keys of the iteration sampler."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.cfg = getattr(dataset, "cfg", None)
        self.label_set = getattr(dataset, "label_set", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            return self.dataset[(self.indices[int(item[0])], *item[1:])]
        return self.dataset[self.indices[int(item)]]


# ------------------------------------------------------------------------------ the loop
def search(
    cfg: SearchRunConfig,
    run_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    stage: Stage = "all",
    resume: bool = False,
    lut: str | None = None,
    progress: bool | None = None,
    max_steps: int | None = None,
) -> SearchResult:
    """Run the search stage(s) into ``run_dir`` (resuming from its ``last.pt``).

    ``max_steps`` stops (after saving ``last.pt``) once that many iterations ran in this call:
    used by tests to simulate a killed run.
    """
    from tqdm import tqdm

    from fasterseg.arch.archparams import make_archparams, write_archparams
    from fasterseg.data import build_dataset, build_eval_loader, build_train_loader

    sc = cfg.search.resolved()
    run_dir = Path(run_dir)
    info = D.init_from_env(device)
    device = info.device
    if sc.amp == "bf16" and device.type not in ("cpu", "cuda"):
        raise UserError("search.amp=bf16 needs a CPU or CUDA device")
    try:
        if sc.deterministic:
            set_deterministic(True)
        seed_everything(sc.seed)

        state: dict[str, Any] | None = None
        if resume:
            state = ckpt_io.load_resume_state(run_dir, "search")

        # ---------------------------------------------------------------- data
        ds = {ph: build_dataset(cfg.data_for(ph), cfg.data.train_split, train=True) for ph in PHASES}
        label_set = ds["search"].label_set
        num_classes = cfg.data.num_classes or label_set.num_classes
        ignore = getattr(label_set, "ignore_index", 255)
        idx_a, idx_b = split_indices(len(ds["search"]), sc.seed)
        train_a = {ph: IndexSubset(ds[ph], idx_a) for ph in PHASES}
        train_b = IndexSubset(ds["search"], idx_b)
        ds_val = build_dataset(cfg.data, cfg.data.val_split, train=False) if sc.eval_every else None
        batch = {"pretrain": sc.pretrain_batch_size, "search": sc.batch_size}
        iters = {ph: sc.iters_per_epoch or max(len(idx_a) // batch[ph], sc.min_iters_per_epoch)
                 for ph in PHASES}
        epochs = {"pretrain": sc.pretrain_epochs, "search": sc.search_epochs}
        base_lr = {"pretrain": sc.pretrain_lr, "search": sc.lr}
        logger.info("trainA %d / trainB %d images, %d pretrain + %d search epochs of %d / %d iterations",
                    len(idx_a), len(idx_b), epochs["pretrain"], epochs["search"], iters["pretrain"],
                    iters["search"])

        # ---------------------------------------------------------------- model and optimisers
        model = Supernet(cfg.space, num_classes, tau=sc.tau).to(device)
        if sc.channels_last:
            model.to(memory_format=torch.channels_last)
        weights = model.weight_parameters()
        arch_opts = {a: torch.optim.Adam(model.arch_parameters(a), lr=sc.arch_lr,
                                         betas=tuple(sc.arch_betas), weight_decay=sc.arch_weight_decay)
                     for a in ARCHS}
        lat_student, lat_teacher, lut_path = load_latency_model(cfg, lut, device)

        def make_sgd(phase: str) -> torch.optim.SGD:
            return torch.optim.SGD(weights, lr=base_lr[phase], momentum=sc.momentum,
                                   weight_decay=sc.weight_decay)

        pos = {"phase": "pretrain", "epoch": 0, "iter": 0, "step": 0}
        lam = sc.latency_weight
        history: list[dict] = []
        branch_scores: dict = {}
        if state is not None:
            model.load_state_dict(state["model"])
            pos = {k: state["position"][k] for k in ("phase", "epoch", "iter", "step")}
            pos["epoch"], pos["iter"], pos["step"] = int(pos["epoch"]), int(pos["iter"]), int(pos["step"])
            lam = float(state["latency_weight"])
            branch_scores = state.get("branch_scores") or {}
            sgd = make_sgd(pos["phase"])
            sgd.load_state_dict(state["weight_optimizer"])
            for a in ARCHS:
                arch_opts[a].load_state_dict(state["arch_optimizers"][a])
            ckpt_io.restore_rng_state(state["rng"])
            logger.info("resuming from %s: %s epoch %d, iteration %d, step %d", run_dir / "last.pt",
                        pos["phase"], pos["epoch"] + 1, pos["iter"], pos["step"])
        else:
            sgd = make_sgd("pretrain")
            D.broadcast_state(model)
        del state

        # ---------------------------------------------------------------- which phases run
        if stage == "search" and pos["phase"] == "pretrain":
            if pos["epoch"] < epochs["pretrain"] and epochs["pretrain"] > 0:
                logger.warning("--stage search: skipping the remaining pretraining (epoch %d of %d)",
                               pos["epoch"], epochs["pretrain"])
            pos.update(phase="search", epoch=0, iter=0)
            sgd = make_sgd("search")
        run_phases = [p for p in PHASES if stage in ("all", p)]

        config_dict = to_dict(cfg)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run_dir, config_dict)
            rundir.write_env(run_dir, device, {"world_size": info.world_size, "stage": stage})
            if resume:
                records = rundir.truncate_metrics(run_dir, pos["step"])
                history = [r for r in records if r.get("type") == "epoch"]

        seg = SegObjective(sc.ohem_thresh, sc.ohem_min_kept_ratio, ignore)
        rng_at_pos = ckpt_io.capture_rng_state()

        def global_epoch(phase: str, e: int) -> int:
            return e if phase == "pretrain" else epochs["pretrain"] + e

        def save(name: str = "last.pt") -> Path | None:
            if not info.is_main:
                return None
            return ckpt_io.save_checkpoint(
                {
                    "kind": CKPT_KIND,
                    "model": model.state_dict(),
                    "num_classes": num_classes,
                    "space": to_dict(cfg.space),
                    "weight_optimizer": sgd.state_dict(),
                    "arch_optimizers": {a: arch_opts[a].state_dict() for a in ARCHS},
                    "schedule": {"type": "exponential_per_epoch", "lr": base_lr[pos["phase"]],
                                 "decay": sc.lr_decay},
                    "position": dict(pos),
                    "latency_weight": lam,
                    "branch_scores": branch_scores,
                    "rng": rng_at_pos,
                    "config": config_dict,
                },
                run_dir / name,
            )

        def write_params(phase: str, epoch_done: int) -> None:
            if not info.is_main:
                return
            params = make_archparams(
                cfg.space, model.arch["teacher"].to_lists(), model.arch["student"].to_lists(),
                num_classes=num_classes, epoch=epoch_done, stage=phase,
                branch_scores={a: {c: {"miou": v} for c, v in s.items()} for a, s in branch_scores.items()},
                lut=lut_path, latency_target_ms=sc.latency_target_ms)
            write_archparams(run_dir / "arch_params.json", params)
            write_archparams(run_dir / "arch_history" / f"{phase}_epoch{epoch_done:03d}.json", params)

        def lr_of(phase: str, e: int) -> float:
            return base_lr[phase] * sc.lr_decay ** e

        def student_latency(with_grad: bool, mode: str | None = None) -> torch.Tensor:
            return relaxed_latency(lat_student, model.arch["student"], mode=mode or sc.latency_mode,
                                   weights=sc.latency_weights, gamma=sc.latency_gamma, tau=sc.tau,
                                   with_grad=with_grad)

        def batches_of(subset, phase: str, e: int, first: int, seed_offset: int):
            return iter(build_train_loader(
                subset, batch[phase], iters[phase], seed=sc.seed + seed_offset,
                epoch=global_epoch(phase, e), start_iter=first, workers=cfg.data.workers,
                distributed=info.enabled))

        def to_dev(b):
            x = b["image"].to(device, non_blocking=True)
            if sc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, downsample_labels(b["label"].to(device), 8)

        def check_finite(loss: torch.Tensor, what: str) -> None:
            if not math.isfinite(float(loss.detach())):
                path = run_dir / "last.pt"
                kept = f"last good checkpoint kept: {path}" if path.is_file() else "no checkpoint yet"
                raise SearchDiverged(
                    f"{what} loss became {float(loss.detach())} at {pos['phase']} epoch {pos['epoch'] + 1}, "
                    f"iteration {pos['iter'] + 1}; search stopped, {kept}. Try a lower search.lr, "
                    "search.arch_lr or search.latency_weight")

        def weight_pass(x, y, arch: str, widths: str) -> float:
            with autocast(sc.amp, device):
                loss = seg(model(x, arch, widths), y)
            check_finite(loss, "weight")
            loss.backward(inputs=weights)
            return float(loss.detach())

        def weight_step(x, y, phase: str) -> float:
            if phase == "pretrain":
                plan = [("teacher", "max"), ("teacher", "min")] + [("teacher", "random")] * sc.sandwich_random
            else:
                plan = [("teacher", "max"), ("student", "gumbel"), ("student", "max"), ("student", "min")]
            total = sum(weight_pass(x, y, a, w) for a, w in plan)
            D.allreduce_grads(weights)
            if sc.grad_clip:
                torch.nn.utils.clip_grad_norm_(weights, sc.grad_clip)
            sgd.step()
            sgd.zero_grad(set_to_none=True)
            return total

        def arch_step(x, y) -> tuple[float, float | None]:
            total, lat_val = 0.0, None
            for opt in arch_opts.values():
                opt.zero_grad(set_to_none=True)
            plan = [("teacher", "max"), ("student", "gumbel"), ("student", "max"), ("student", "min")]
            for i, (arch, widths) in enumerate(plan):
                with autocast(sc.amp, device):
                    loss = seg(model(x, arch, widths), y)
                if arch == "student" and i == len(plan) - 1 and lat_student is not None and lam > 0:
                    lat = student_latency(True)
                    lat_val = float(lat.detach())
                    loss = loss + lam * lat
                check_finite(loss, "architecture")
                loss.backward(inputs=model.arch_parameters(arch))
                total += float(loss.detach())
            D.allreduce_grads(model.arch_parameters())
            for opt in arch_opts.values():
                opt.step()
            return total, lat_val

        disable_bar = ((not sys.stderr.isatty()) if progress is None else not progress) or not info.is_main
        cost: dict | None = None
        steps_this_call = 0
        stopped = False
        try:
            for phase in run_phases:
                if PHASES.index(phase) < PHASES.index(pos["phase"]):
                    continue  # already done
                if phase != pos["phase"]:  # entering the search phase from a finished pretrain
                    pos.update(phase=phase, epoch=0, iter=0)
                    sgd = make_sgd(phase)
                    rng_at_pos = ckpt_io.capture_rng_state()
                if pos["epoch"] >= epochs[phase]:
                    continue
                meter = CostMeter(iters[phase], epochs[phase] * iters[phase],
                                  pos["epoch"] * iters[phase] + pos["iter"],
                                  warmup=sc.cost_warmup, measure=sc.cost_measure, device=device)
                meter.start()
                for epoch in range(pos["epoch"], epochs[phase]):
                    lr = lr_of(phase, epoch)
                    for g in sgd.param_groups:
                        g["lr"] = lr
                    first = pos["iter"] if epoch == pos["epoch"] else 0
                    it_a = batches_of(train_a[phase], phase, epoch, first, 0)
                    it_b = batches_of(train_b, phase, epoch, first, 1) if phase == "search" else None
                    model.train()
                    t_epoch = time.perf_counter()
                    sums = {"w": 0.0, "a": 0.0, "n": 0}
                    bar = tqdm(total=iters[phase], initial=first, disable=disable_bar, leave=False,
                               desc=f"{phase} {epoch + 1}/{epochs[phase]}", dynamic_ncols=True)
                    for it in range(first, iters[phase]):
                        arch_loss = lat_val = None
                        if it_b is not None:
                            xb, yb = to_dev(next(it_b))
                            arch_loss, lat_val = arch_step(xb, yb)
                        xa, ya = to_dev(next(it_a))
                        w_loss = weight_step(xa, ya, phase)
                        pos.update(epoch=epoch, iter=it + 1, step=pos["step"] + 1)
                        rng_at_pos = ckpt_io.capture_rng_state()
                        steps_this_call += 1
                        sums["w"] += w_loss
                        sums["a"] += arch_loss or 0.0
                        sums["n"] += 1
                        bar.update(1)
                        bar.set_postfix(loss=f"{w_loss:.3f}")
                        est = meter.tick()
                        if est is not None:
                            cost = {"stage": phase, **est.to_dict()}
                            if info.is_main:
                                logger.info("%s: %s", phase, est.describe())
                                rundir.append_metrics(run_dir, {"type": "cost", "step": pos["step"], **cost})
                        if info.is_main and sc.log_every and pos["step"] % sc.log_every == 0:
                            rundir.append_metrics(run_dir, {
                                "type": "iter", "stage": phase, "epoch": epoch + 1, "iter": it + 1,
                                "step": pos["step"], "lr": lr, "weight_loss": w_loss,
                                "arch_loss": arch_loss, "latency_ms": lat_val, "latency_weight": lam})
                        if sc.save_every and pos["step"] % sc.save_every == 0 and it + 1 < iters[phase]:
                            save()
                        if max_steps is not None and steps_this_call >= max_steps:
                            stopped = True
                            break
                    bar.close()
                    if stopped and pos["iter"] < iters[phase]:
                        save()
                        break
                    # ---- end of epoch
                    pos.update(epoch=epoch + 1, iter=0)
                    record = epoch_record(model, phase, epoch, global_epoch(phase, epoch) + 1, pos,
                                           lr, lam, sums, time.perf_counter() - t_epoch, device)
                    if lat_student is not None:
                        record["student_latency_ms"] = float(student_latency(False, "naive"))
                        record["teacher_latency_ms"] = float(relaxed_latency(
                            lat_teacher, model.arch["teacher"], mode="naive", weights=sc.latency_weights,
                            gamma="softmax", tau=sc.tau, with_grad=False))
                    if ds_val is not None and ((epoch + 1) % sc.eval_every == 0 or epoch + 1 == epochs[phase]):
                        loader = build_eval_loader(ds_val, workers=cfg.data.workers, distributed=info.enabled)
                        scores = validate_heads(model, loader, num_classes, device, ignore_index=ignore,
                                                max_images=sc.val_max_images, amp=sc.amp,
                                                channels_last=sc.channels_last)
                        branch_scores = scores
                        for a, per in scores.items():
                            for c, v in per.items():
                                record[f"val_miou_{a}_{c.replace(',', '+')}"] = v
                            record[f"{a}_best_miou"] = max(per.values()) if per else None
                    if phase == "search" and sc.latency_range_ms and record.get("student_latency_ms"):
                        lo, hi = sc.latency_range_ms
                        est_ms = record["student_latency_ms"]
                        if est_ms > hi:
                            lam *= 2.0
                        elif est_ms < lo:
                            lam /= 2.0
                        record["latency_weight_next"] = lam
                    rng_at_pos = ckpt_io.capture_rng_state()
                    if info.is_main:
                        history.append(record)
                        rundir.append_metrics(run_dir, record)
                        rundir.write_summary(run_dir, [{k: v for k, v in r.items() if k != "type"} for r in history])
                        write_params(phase, epoch + 1)
                        save()
                        try:
                            plot_history(history, run_dir / "search.png")
                        except Exception as e:  # a plotting problem must not stop a search
                            logger.warning("could not plot search.png: %s", e)
                        msg = collapse_warning(history, sc.collapse_window)
                        if msg:
                            logger.warning("%s", msg)
                        logger.info(describe(record))
                    D.barrier()
                    if stopped:
                        break
                if stopped:
                    break
        except KeyboardInterrupt:
            if info.is_main:
                path = save()
                logger.warning("interrupted: saved %s (%s epoch %d, iteration %d, step %d)", path,
                               pos["phase"], pos["epoch"] + 1, pos["iter"], pos["step"])
            raise
        if info.is_main and not (run_dir / "arch_params.json").is_file():
            write_params(pos["phase"], pos["epoch"])
        return SearchResult(run_dir=run_dir, model=model, phase=pos["phase"], epoch=pos["epoch"],
                            step=pos["step"], latency_weight=lam, branch_scores=branch_scores,
                            history=history, cost=cost, stopped_early=stopped)
    finally:
        D.cleanup(info)
