"""The architecture search: ``search(cfg, run_dir, ...)`` (paper appendix F/H, facts sections 4-6).

Two stages over one supernet:

1. ``pretrain``: per iteration a ``weight_step`` on trainA (sandwich widths, teacher stem/heads).
2. ``search``: per iteration an ``arch_step`` on trainB, then a ``weight_step`` on trainA (the
   4-step co-search of appendix F with the authors' loss).

The steps live in ``fasterseg.search.steps``; this module only feeds them batches and does the
bookkeeping: each epoch validates every prediction head of both architectures, logs entropies,
skip share, latency and lambda (``metrics.jsonl``, ``search.png``), adapts lambda to
``search.latency_range_ms``, warns on collapse and writes ``arch_params.json``. ``last.pt`` holds
everything needed to resume exactly.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from fasterseg.bench import tuning
from fasterseg.config.core import to_dict
from fasterseg.config.search import SearchRunConfig
from fasterseg.engine import checkpoint as ckpt_io
from fasterseg.engine import distributed as D
from fasterseg.engine import rundir, tensorboard
from fasterseg.engine.amp import resolve_amp
from fasterseg.engine.cost import CostMeter
from fasterseg.engine.search_monitor import (
    collapse_warning,
    describe,
    epoch_record,
    plot_history,
    validate_heads,
)
from fasterseg.engine.seed import seed_everything, set_deterministic
from fasterseg.errors import UserError
from fasterseg.search.data import IndexSubset, split_indices
from fasterseg.search.latency import (
    adapt_latency_weight,
    candidate_latencies,
    load_latency_models,
)
from fasterseg.search.state import SearchDiverged, SearchState
from fasterseg.search.steps import arch_step, relaxed_latency, student_latency, weight_step
from fasterseg.supernet import Supernet, downsample_labels

logger = logging.getLogger(__name__)

Stage = Literal["pretrain", "search", "all"]
PHASES = ("pretrain", "search")
CKPT_KIND = "fasterseg-search"  # checked by ckpt_io.load_resume_state(run_dir, "search")


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
    amp: str = "off"


def resolve_search_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> ``off``/``bf16`` measured once per machine (``engine.amp.resolve_amp``).

    The search has no loss scaler, so fp16 is never chosen (CUDA without bf16 runs fp32).
    """
    if amp == "bf16" and device.type not in ("cpu", "cuda"):
        raise UserError("search.amp=bf16 needs a CPU or CUDA device")
    choice = resolve_amp(amp, device)
    return "off" if choice == "fp16" else choice


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
    info = D.init_from_env(device)
    if info.device.type == "cpu":
        tuning.tune_malloc()  # freed activations stay in the heap: no page faults every step
    try:
        tensorboard.start(run_dir, cfg.search.tensorboard and info.is_main)
        run = _SearchRun(cfg, Path(run_dir), info, stage=stage, resume=resume, lut=lut,
                         progress=progress)
        return run.run(max_steps)
    finally:
        tensorboard.stop(run_dir)
        D.cleanup(info)


class _SearchRun:
    """One call of ``search``: the data, the state, the position and the run directory."""

    def __init__(self, cfg: SearchRunConfig, run_dir: Path, info, *, stage: Stage, resume: bool,
                 lut: str | None, progress: bool | None) -> None:
        from fasterseg.data import build_dataset

        self.cfg, self.run_dir, self.info, self.device = cfg, run_dir, info, info.device
        sc = self.sc = cfg.search.resolved()
        amp = resolve_search_amp(sc.amp, self.device)
        if sc.deterministic:
            set_deterministic(True)
        seed_everything(sc.seed)
        saved = ckpt_io.load_resume_state(run_dir, "search") if resume else None

        # data: trainA (weights) / trainB (architecture) halves of the training split
        ds = {ph: build_dataset(cfg.data_for(ph), cfg.data.train_split, train=True) for ph in PHASES}
        label_set = ds["search"].label_set
        self.num_classes = cfg.data.num_classes or label_set.num_classes
        self.ignore = getattr(label_set, "ignore_index", 255)
        idx_a, idx_b = split_indices(len(ds["search"]), sc.seed)
        self.train_a = {ph: IndexSubset(ds[ph], idx_a) for ph in PHASES}
        self.train_b = IndexSubset(ds["search"], idx_b)
        self.ds_val = build_dataset(cfg.data, cfg.data.val_split, train=False)
        self.batch = {"pretrain": sc.pretrain_batch_size, "search": sc.batch_size}
        self.iters = {ph: sc.iters_per_epoch or max(len(idx_a) // self.batch[ph],
                                                    sc.min_iters_per_epoch) for ph in PHASES}
        self.epochs = {"pretrain": sc.pretrain_epochs, "search": sc.search_epochs}
        logger.info("trainA %d / trainB %d images, %d pretrain + %d search epochs of %d / %d "
                    "iterations", len(idx_a), len(idx_b), self.epochs["pretrain"],
                    self.epochs["search"], self.iters["pretrain"], self.iters["search"])

        # model, optimisers, latency
        model = Supernet(cfg.space, self.num_classes, tau=sc.tau,
                         heads=sc.supernet_heads).to(self.device)
        if sc.channels_last:
            model.to(memory_format=torch.channels_last)
        self.lat = load_latency_models(cfg, lut, self.device)
        self.state = SearchState.create(model, sc, latency=self.lat.student if self.lat else None,
                                        ignore_index=self.ignore, amp=amp, device=self.device)
        self.pos = {"phase": "pretrain", "epoch": 0, "iter": 0, "step": 0}
        self.history: list[dict] = []
        self.branch_scores: dict = {}
        if saved is not None:
            try:
                model.load_state_dict(saved["model"])
            except RuntimeError:
                raise UserError(
                    f"{run_dir / 'last.pt'} does not match this supernet (search.supernet_heads is "
                    f"{sc.supernet_heads!r} here; runs of preset_values=official made before the "
                    "authors' heads existed resume with --set search.supernet_heads=paper)"
                ) from None
            self.pos = {k: saved["position"][k] for k in ("phase", "epoch", "iter", "step")}
            for k in ("epoch", "iter", "step"):
                self.pos[k] = int(self.pos[k])
            self.state.latency_weight = float(saved["latency_weight"])
            self.branch_scores = saved.get("branch_scores") or {}
            self.state.new_sgd(self.pos["phase"])
            self.state.load_optimizer_state(saved)
            ckpt_io.restore_rng_state(saved["rng"])
            logger.info("resuming from %s: %s epoch %d, iteration %d, step %d",
                        run_dir / "last.pt", self.pos["phase"], self.pos["epoch"] + 1,
                        self.pos["iter"], self.pos["step"])
        else:
            D.broadcast_state(model)
        del saved

        if stage == "search" and self.pos["phase"] == "pretrain":
            if self.pos["epoch"] < self.epochs["pretrain"] and self.epochs["pretrain"] > 0:
                logger.warning("--stage search: skipping the remaining pretraining (epoch %d of %d)",
                               self.pos["epoch"], self.epochs["pretrain"])
            self.pos.update(phase="search", epoch=0, iter=0)
            self.state.new_sgd("search")
        self.run_phases = [p for p in PHASES if stage in ("all", p)]

        self.config_dict = to_dict(cfg)
        # As in training: a resumed run keeps its config.yaml (what a plain --resume reads) until
        # it has made progress, so a --set override that fails at once is not made permanent.
        self.config_saved = not resume
        self.resumed_step = self.pos["step"]
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                rundir.write_config(run_dir, self.config_dict)
            rundir.write_env(run_dir, self.device, {"world_size": info.world_size, "stage": stage,
                                                    "amp": amp})
            if resume:
                records = rundir.truncate_metrics(run_dir, self.pos["step"])
                self.history = [r for r in records if r.get("type") == "epoch"]
        self.rng_at_pos = ckpt_io.capture_rng_state()
        self.disable_bar = ((not sys.stderr.isatty()) if progress is None else not progress) \
            or not info.is_main
        self.cost: dict | None = None

    # ------------------------------------------------------------------ the loop
    def run(self, max_steps: int | None) -> SearchResult:
        pos, steps, stopped = self.pos, 0, False
        try:
            for phase in self.run_phases:
                if PHASES.index(phase) < PHASES.index(pos["phase"]):
                    continue  # already done
                if phase != pos["phase"]:  # entering the search phase from a finished pretrain
                    pos.update(phase=phase, epoch=0, iter=0)
                    self.state.new_sgd(phase)
                    self.rng_at_pos = ckpt_io.capture_rng_state()
                if pos["epoch"] >= self.epochs[phase]:
                    continue
                self.meter = CostMeter(self.iters[phase], self.epochs[phase] * self.iters[phase],
                                       pos["epoch"] * self.iters[phase] + pos["iter"],
                                       warmup=self.sc.cost_warmup, measure=self.sc.cost_measure,
                                       device=self.device)
                self.meter.start()
                for epoch in range(pos["epoch"], self.epochs[phase]):
                    budget = None if max_steps is None else max_steps - steps
                    done, sums, seconds = self.train_epoch(phase, epoch, budget)
                    steps += done
                    stopped = max_steps is not None and steps >= max_steps
                    if stopped and pos["iter"] < self.iters[phase]:
                        self.save()  # killed mid-epoch (tests)
                        break
                    self.end_epoch(phase, epoch, sums, seconds)
                    if stopped:
                        break
                if stopped:
                    break
        except KeyboardInterrupt:
            if self.info.is_main:
                path = self.save()
                logger.warning("interrupted: saved %s (%s epoch %d, iteration %d, step %d)", path,
                               pos["phase"], pos["epoch"] + 1, pos["iter"], pos["step"])
            raise
        if self.info.is_main and not (self.run_dir / "arch_params.json").is_file():
            self.write_params(pos["phase"], pos["epoch"])
        return SearchResult(run_dir=self.run_dir, model=self.state.model, phase=pos["phase"],
                            epoch=pos["epoch"], step=pos["step"],
                            latency_weight=self.state.latency_weight,
                            branch_scores=self.branch_scores, history=self.history,
                            cost=self.cost, stopped_early=stopped, amp=self.state.amp)

    def train_epoch(self, phase: str, epoch: int, budget: int | None) -> tuple[int, dict, float]:
        """Iterations of one epoch from the current position (at most ``budget``)."""
        from tqdm import tqdm

        pos, sc, state = self.pos, self.sc, self.state
        lr = state.lr_at(phase, epoch)
        state.set_lr(lr)
        first = pos["iter"] if epoch == pos["epoch"] else 0
        it_a = self.batches(self.train_a[phase], phase, epoch, first, 0)
        it_b = self.batches(self.train_b, phase, epoch, first, 1) if phase == "search" else None
        state.model.train()
        t0 = time.perf_counter()
        sums = {"w": 0.0, "a": 0.0, "n": 0, "lr": lr}
        bar = tqdm(total=self.iters[phase], initial=first, disable=self.disable_bar, leave=False,
                   desc=f"{phase} {epoch + 1}/{self.epochs[phase]}", dynamic_ncols=True)
        done = 0
        for it in range(first, self.iters[phase]):
            arch_loss = lat_val = None
            try:
                if it_b is not None:
                    arch_loss, lat_val = arch_step(state, *self.to_dev(next(it_b)))
                w_loss = weight_step(state, *self.to_dev(next(it_a)), phase)
            except SearchDiverged as e:
                raise self.diverged(e) from None
            pos.update(epoch=epoch, iter=it + 1, step=pos["step"] + 1)
            self.rng_at_pos = ckpt_io.capture_rng_state()
            done += 1
            sums["w"] += w_loss
            sums["a"] += arch_loss or 0.0
            sums["n"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{w_loss:.3f}")
            self.log_iter(phase, epoch, it, lr, w_loss, arch_loss, lat_val)
            if sc.save_every and pos["step"] % sc.save_every == 0 and it + 1 < self.iters[phase]:
                self.save()
            if budget is not None and done >= budget:
                break
        bar.close()
        return done, sums, time.perf_counter() - t0

    def end_epoch(self, phase: str, epoch: int, sums: dict, seconds: float) -> None:
        """Validate, adapt lambda, log, save ``last.pt`` and ``arch_params.json``."""
        pos, sc, state = self.pos, self.sc, self.state
        pos.update(epoch=epoch + 1, iter=0)
        lam = state.latency_weight
        record = epoch_record(state.model, phase, epoch, self.global_epoch(phase, epoch) + 1, pos,
                              sums["lr"], lam, sums, seconds, self.device)
        if self.lat is not None:
            record["student_latency_ms"] = float(student_latency(state, False, "naive"))
            record["teacher_latency_ms"] = float(relaxed_latency(
                self.lat.teacher, state.model.arch["teacher"], mode="naive",
                weights=sc.latency_weights, gamma="softmax", tau=sc.tau, with_grad=False))
        last_epoch = epoch + 1 == self.epochs[phase]
        if (sc.eval_every and (epoch + 1) % sc.eval_every == 0) or last_epoch:
            self.validate(record)
        if phase == "search" and self.lat is not None:
            self.adapt_lambda(record)
        self.rng_at_pos = ckpt_io.capture_rng_state()
        if self.info.is_main:
            self.history.append(record)
            rundir.append_metrics(self.run_dir, record)
            rundir.write_summary(self.run_dir, [{k: v for k, v in r.items() if k != "type"}
                                                for r in self.history])
            self.write_params(phase, epoch + 1)
            self.save()
            try:
                plot_history(self.history, self.run_dir / "search.png")
            except Exception as e:  # a plotting problem must not stop a search
                logger.warning("could not plot search.png: %s", e)
            msg = collapse_warning(self.history, sc.collapse_window)
            if msg:
                logger.warning("%s", msg)
            logger.info(describe(record))
        D.barrier()

    # ------------------------------------------------------------------ epoch-end parts
    def validate(self, record: dict) -> None:
        from fasterseg.data import build_eval_loader

        loader = build_eval_loader(self.ds_val, workers=self.cfg.data.workers,
                                   distributed=self.info.enabled)
        scores = validate_heads(self.state.model, loader, self.num_classes, self.device,
                                ignore_index=self.ignore, max_images=self.sc.val_max_images,
                                amp=self.state.amp, channels_last=self.sc.channels_last)
        self.branch_scores = scores
        for a, per in scores.items():
            for c, v in per.items():
                record[f"val_miou_{a}_{c.replace(',', '+')}"] = v
            record[f"{a}_best_miou"] = max(per.values()) if per else None

    def adapt_lambda(self, record: dict) -> None:
        """Log the derived candidates' table latency; adapt lambda to the window (if set)."""
        sc, state = self.sc, self.state
        try:
            cands = candidate_latencies(state.model, self.lat.table)
        except UserError as e:  # e.g. a table without the decoder's blocks
            if sc.latency_range_ms:
                logger.warning("latency window not applied (lambda stays %.3g): the derived "
                               "candidates' latency is unavailable: %s", state.latency_weight, e)
            return
        for key, ms in cands.items():
            record[f"candidate_latency_ms_{key.replace(',', '+')}"] = ms
        if not sc.latency_range_ms or not cands:
            return
        lam = state.latency_weight
        new = adapt_latency_weight(lam, cands, tuple(sc.latency_range_ms), sc.latency_weight_max)
        if new == sc.latency_weight_max and lam * 2.0 > new:
            logger.warning("lambda at its cap search.latency_weight_max=%.3g: the derived "
                           "candidates (%s ms) stay above the window %s ms", new,
                           ", ".join(f"{v:.3g}" for v in cands.values()),
                           list(sc.latency_range_ms))
        state.latency_weight = new
        record["latency_weight_next"] = new

    # ------------------------------------------------------------------ helpers
    def global_epoch(self, phase: str, e: int) -> int:
        return e if phase == "pretrain" else self.epochs["pretrain"] + e

    def batches(self, subset, phase: str, e: int, first: int, seed_offset: int):
        from fasterseg.data import build_train_loader

        return iter(build_train_loader(
            subset, self.batch[phase], self.iters[phase], seed=self.sc.seed + seed_offset,
            epoch=self.global_epoch(phase, e), start_iter=first, workers=self.cfg.data.workers,
            distributed=self.info.enabled))

    def to_dev(self, b) -> tuple[torch.Tensor, torch.Tensor]:
        x = b["image"].to(self.device, non_blocking=True)
        if self.sc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, downsample_labels(b["label"].to(self.device), 8)

    def diverged(self, e: SearchDiverged) -> SearchDiverged:
        path = self.run_dir / "last.pt"
        kept = f"last good checkpoint kept: {path}" if path.is_file() else "no checkpoint yet"
        p = self.pos
        return SearchDiverged(
            f"{e.what} loss became {e.value} at {p['phase']} epoch {p['epoch'] + 1}, iteration "
            f"{p['iter'] + 1}; search stopped, {kept}. Try a lower search.lr, search.arch_lr or "
            "search.latency_weight", e.what, e.value)

    def log_iter(self, phase, epoch, it, lr, w_loss, arch_loss, lat_val) -> None:
        pos, sc = self.pos, self.sc
        est = self.meter.tick()
        if est is not None:
            self.cost = {"stage": phase, **est.to_dict()}
            if self.info.is_main:
                logger.info("%s: %s", phase, est.describe())
                rundir.append_metrics(self.run_dir, {"type": "cost", "step": pos["step"],
                                                     **self.cost})
        if self.info.is_main and sc.log_every and pos["step"] % sc.log_every == 0:
            rundir.append_metrics(self.run_dir, {
                "type": "iter", "stage": phase, "epoch": epoch + 1, "iter": it + 1,
                "step": pos["step"], "lr": lr, "weight_loss": w_loss, "arch_loss": arch_loss,
                "latency_ms": lat_val, "latency_weight": self.state.latency_weight})

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.info.is_main:
            return None
        sc, state = self.sc, self.state
        if not self.config_saved and self.pos["step"] > self.resumed_step:
            rundir.write_config(self.run_dir, self.config_dict)  # the resumed run made progress
            self.config_saved = True
        return ckpt_io.save_checkpoint(
            {
                "kind": CKPT_KIND,
                "model": state.model.state_dict(),
                "num_classes": self.num_classes,
                "space": to_dict(self.cfg.space),
                **state.optimizer_state(),
                "schedule": {"type": "exponential_per_epoch",
                             "lr": state.base_lr(self.pos["phase"]), "decay": sc.lr_decay},
                "position": dict(self.pos),
                "latency_weight": state.latency_weight,
                "branch_scores": self.branch_scores,
                "rng": self.rng_at_pos,
                "config": self.config_dict,
            },
            self.run_dir / name,
        )

    def write_params(self, phase: str, epoch_done: int) -> None:
        from fasterseg.arch.archparams import make_archparams, write_archparams

        if not self.info.is_main:
            return
        model = self.state.model
        params = make_archparams(
            self.cfg.space, model.arch["teacher"].to_lists(), model.arch["student"].to_lists(),
            num_classes=self.num_classes, epoch=epoch_done, stage=phase,
            branch_scores={a: {c: {"miou": v} for c, v in s.items()}
                           for a, s in self.branch_scores.items()},
            lut=self.lat.path if self.lat else None, latency_target_ms=self.sc.latency_target_ms)
        write_archparams(self.run_dir / "arch_params.json", params)
        write_archparams(self.run_dir / "arch_history" / f"{phase}_epoch{epoch_done:03d}.json",
                         params)
