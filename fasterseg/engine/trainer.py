"""The training loop of the train stage: one readable function, ``train(cfg, run_dir, ...)``.

What it does, in order: join torchrun's process group (if any), seed, build data and model (or
restore both from ``last.pt``), read the validation files once, estimate the cost after a few
steps, then loop epochs x iterations with OHEM + aux + (optional) KD losses, saving ``last.pt``
every epoch / ``save_every`` steps, validating every ``eval_every`` epochs into ``best.pt``.
Ctrl-C saves before leaving; a NaN/inf loss or NaN/inf weights stop without touching the last
good checkpoint.

The end of an epoch writes in an order that a kill at any point can recover from: ``last.pt``
(the epoch's training, marked "validation pending") before validating, then ``best.pt``, then
``last.pt`` naming it, then the metrics row (also kept in ``last.pt``). A resume finishes a pending
validation first, checks ``best.pt`` against ``last.pt`` and restores a lost metrics row.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fasterseg.bench import tuning
from fasterseg.config.core import to_dict
from fasterseg.config.train import TrainRunConfig
from fasterseg.engine import checkpoint as ckpt_io
from fasterseg.engine import distributed as D
from fasterseg.engine import rundir, tensorboard
from fasterseg.engine import schedule as lr_schedule
from fasterseg.engine.amp import autocast, resolve_amp
from fasterseg.engine.cost import CostMeter, peak_memory_mb
from fasterseg.engine.losses import OhemCrossEntropy, SegLoss, kd_loss
from fasterseg.engine.seed import seed_everything, set_deterministic
from fasterseg.engine.signals import deferred_signals
from fasterseg.engine.train_steps import (
    better,
    check_labelled,
    diverged_message,
    diverged_weights_message,
    eval_due,
    finite_or_none,
)
from fasterseg.engine.train_steps import (  # old names: tests patch and import them here
    nonfinite_tensors as _nonfinite_tensors,
)
from fasterseg.engine.train_steps import validate as _validate
from fasterseg.engine.valcheck import check_val_files
from fasterseg.errors import UserError
from fasterseg.utils.io import write_json

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/inf: the run stops, the last good checkpoint stays."""


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module  # unwrapped (no DDP), on the training device
    epoch: int  # completed epochs
    step: int  # optimiser steps done
    last_loss: float | None
    best: dict | None  # {"name", "value", "epoch", "step"} of best.pt
    last_eval: dict | None = None
    cost: dict | None = None
    world_size: int = 1
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------------ helpers
def _check_amp(amp: str, device: torch.device) -> None:
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")


def load_teacher(
    path: str, num_classes: int, device: torch.device, channels_last: bool
) -> nn.Module:
    """Frozen teacher in eval mode, its architecture rebuilt from the checkpoint's arch dict."""
    teacher, info = ckpt_io.load_model(path, num_classes=num_classes, device=device)
    if info["source"] != "checkpoint":
        raise UserError(f"--teacher needs a trained checkpoint (.pt), got {path!r}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


# ------------------------------------------------------------------------------------ the loop
def train(
    cfg: TrainRunConfig,
    run_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``cfg.train.arch`` on ``cfg.data`` into ``run_dir`` (resuming from its last.pt).

    Raises ``UserError`` for bad inputs, ``TrainingDiverged`` on NaN/inf loss and re-raises
    ``KeyboardInterrupt`` after saving ``last.pt``.
    """
    from tqdm import tqdm

    from fasterseg.data import build_dataset, build_train_loader
    from fasterseg.models import build_model, create_model

    tc = cfg.train
    run_dir = Path(run_dir)
    info = D.init_from_env(device)
    device = info.device
    _check_amp(tc.amp, device)
    malloc_tuned = device.type == "cpu" and tuning.tune_malloc()
    amp = resolve_amp(tc.amp, device)
    if tc.amp == "auto":
        logger.info("train.amp=auto -> %s on this %s", amp, device.type)
    try:
        tensorboard.start(run_dir, tc.tensorboard and info.is_main)
        if tc.deterministic:
            set_deterministic(True)
        seed_everything(tc.seed)  # same seed on every rank: identical initial weights

        state: dict[str, Any] | None = ckpt_io.load_resume_state(run_dir) if resume else None

        ds_train = build_dataset(cfg.data, cfg.data.train_split, train=True)
        label_set = ds_train.label_set
        num_classes = cfg.data.num_classes or label_set.num_classes
        if num_classes != len(label_set.class_names):
            logger.warning("data.num_classes=%d but the label set %s has %d classes",
                           num_classes, label_set.name, len(label_set.class_names))
        ds_val = build_dataset(cfg.data, cfg.data.val_split, train=False) if tc.eval_every else None
        if ds_val is not None:  # a bad file found now, not after an epoch of training
            limit = tc.eval_max_images * info.world_size if tc.eval_max_images else None
            ds_val, _ = check_val_files(ds_val, cfg.data.skip_corrupt, limit)

        if state is not None:
            model = build_model(state["arch"], num_classes=int(state["num_classes"]))
            model.load_state_dict(state["model"])
            if int(state["num_classes"]) != num_classes:
                raise UserError(f"{run_dir}/last.pt has {state['num_classes']} classes, "
                                f"the data has {num_classes}")
        else:
            model = create_model(tc.arch, num_classes=num_classes)
        model.to(device)
        if tc.channels_last:
            model.to(memory_format=torch.channels_last)
        arch_dict = ckpt_io.arch_to_dict(model.arch)
        teacher = None
        if tc.teacher:
            teacher = load_teacher(tc.teacher, num_classes, device, tc.channels_last)

        optimizer = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum,
                                    weight_decay=tc.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=tc.amp == "fp16")
        start_epoch, start_iter, step = 0, 0, 0
        best: dict | None = None
        pending: dict | None = None  # an epoch saved before its validation finished
        last_record: dict | None = None  # the metrics row of the last completed epoch
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, start_iter = int(state["epoch"]), int(state["iter_in_epoch"])
            step, best = int(state["step"]), state.get("best")
            pending, last_record = state.get("pending_epoch"), state.get("epoch_record")
            ckpt_io.restore_rng_state(state["rng"])
            logger.info("resuming from %s: epoch %d, iteration %d, step %d", run_dir / "last.pt",
                        start_epoch + 1, start_iter, step)
        del state
        resumed_step = step

        net: nn.Module = model
        if info.enabled:
            if tc.sync_bn and device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)

        ignore = getattr(label_set, "ignore_index", 255)
        weight = _class_weights(tc, ds_train, num_classes) if tc.class_weights != "none" else None
        ohem = OhemCrossEntropy(tc.ohem_thresh, tc.ohem_min_kept_ratio, ignore, weight)
        criterion = SegLoss(ohem, tc.aux_weight)
        label_dict = ckpt_io.label_set_to_dict(label_set)
        config_dict = to_dict(cfg)

        history: list[dict] = []
        # A resumed run's --set overrides reach config.yaml (what a plain --resume reads) only
        # once the run has made progress: an override that fails at once is not made permanent.
        config_saved = not resume
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                rundir.write_config(run_dir, config_dict)
                (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a new run: no old records
            rundir.write_env(run_dir, device, {"world_size": info.world_size,
                                               "deterministic": tc.deterministic,
                                               "malloc_tuned": malloc_tuned})
            if resume:
                records = rundir.truncate_metrics(run_dir, step)
                records = rundir.ensure_epoch_record(run_dir, last_record, records)
                history = [r for r in records if r.get("type") == "epoch"]
                if history:  # summary.csv agrees with the (possibly restored) rows
                    rundir.write_summary(run_dir, [{k: v for k, v in r.items() if k != "type"}
                                                   for r in history])
                best, note = rundir.reconcile_best(run_dir, best)
                if note:
                    logger.warning("%s", note)
        if info.is_main:
            logger.info("batch %d per process x %d process(es) x %d accumulation = %d images per "
                        "step", tc.batch_size, info.world_size, tc.accumulate,
                        tc.batch_size * info.world_size * tc.accumulate)

        pos = {"epoch": start_epoch, "iter": start_iter, "step": step}
        rng_at_pos = ckpt_io.capture_rng_state()

        def check_weights() -> None:
            """Never save NaN/inf weights over a good checkpoint (a step can diverge them with a
            finite loss, e.g. on an epoch's last iteration). Same answer on every rank."""
            bad = _nonfinite_tensors(model)
            if bad:
                raise TrainingDiverged(diverged_weights_message(run_dir, pos, bad, lr))

        def save(name: str, metric: dict | None = None) -> Path | None:
            nonlocal config_saved
            if not info.is_main:
                return None
            check_weights()
            if not config_saved and pos["step"] > resumed_step:
                rundir.write_config(run_dir, config_dict)  # the resumed run made progress
                config_saved = True
            return ckpt_io.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "arch": arch_dict,
                    "num_classes": num_classes,
                    "label_set": label_dict,
                    "class_names": label_dict["class_names"],
                    "optimizer": optimizer.state_dict(),
                    "schedule": {**lr_schedule.describe(tc),
                                 "current_lr": lr_schedule.lr_at(tc, pos["step"])},
                    "amp": amp,
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "epoch": pos["epoch"], "iter_in_epoch": pos["iter"], "step": pos["step"],
                    "data_position": {"seed": tc.seed, "epoch": pos["epoch"],
                                      "start_iter": pos["iter"] * tc.accumulate},
                    "rng": rng_at_pos,
                    "best": best,
                    "metric": metric,
                    "pending_epoch": pending,
                    "epoch_record": last_record,
                    "config": config_dict,
                },
                run_dir / name,
            )

        def finish_epoch(record: dict, validate: bool) -> None:
            """Validate (if due), then write best.pt, last.pt and the metrics row, in that order."""
            nonlocal best, last_eval, pending, last_record
            check_weights()  # every rank: all stop together
            metric = None
            if validate:
                pending = record
                if info.is_main and pos["step"] > resumed_step:
                    save("last.pt")  # the epoch's training is safe before validation reads files
                last_eval = _validate(model, ds_val, cfg, num_classes, label_dict, device, info,
                                      amp)
                miou = finite_or_none(last_eval["miou"])
                if miou is None and info.is_main:
                    logger.warning("validation after epoch %d: no labelled pixel in its %d images, "
                                   "so mIoU is undefined (written as null); check the labels with"
                                   " `fasterseg data check`", record["epoch"], last_eval["images"])
                record.update(val_miou=miou, val_aacc=finite_or_none(last_eval["aacc"]),
                              val_macc=finite_or_none(last_eval["macc"]),
                              val_images=last_eval["images"])
                metric = {"name": "val_miou", "value": miou, "epoch": record["epoch"],
                          "step": pos["step"]}
            elif ds_val is None:
                metric = {"name": "train_loss", "value": record["train_loss"],
                          "epoch": record["epoch"], "step": pos["step"]}
            improved = metric is not None and better(metric, best)
            if improved:
                best = metric
            pending, last_record = None, record
            if info.is_main:
                if improved:  # best.pt exists before any last.pt names it
                    save("best.pt", metric)
                    write_json(run_dir / "best.json", best)
                save("last.pt")
                history.append(record)
                rundir.append_metrics(run_dir, record)
                rows = [{k: v for k, v in r.items() if k != "type"} for r in history]
                rundir.write_summary(run_dir, rows)
                val = ""
                if record.get("val_miou") is not None:
                    val = f"  val mIoU {100 * record['val_miou']:.2f}"
                loss = record["train_loss"]
                logger.info("epoch %d/%d  loss %s  lr %.2e%s", record["epoch"], tc.epochs,
                            "n/a" if loss is None else f"{loss:.4f}", record["lr"], val)
            D.barrier()

        total_iters = tc.epochs * tc.iters_per_epoch
        done_iters = start_epoch * tc.iters_per_epoch + start_iter
        meter = CostMeter(tc.iters_per_epoch, total_iters, done_iters, warmup=tc.cost_warmup,
                          measure=tc.cost_measure, device=device)
        cost: dict | None = None
        last_loss: float | None = None
        last_eval: dict | None = None
        disable_bar = (not sys.stderr.isatty()) if progress is None else not progress
        disable_bar = disable_bar or not info.is_main
        nonfinite = torch.zeros(1, device=device)
        meter.start()
        t_start = time.perf_counter()
        budget_s = tc.time_budget_min * 60 if tc.time_budget_min else None
        out_of_time = False
        lr = lr_schedule.lr_at(tc, pos["step"])
        try:
            if pending is not None:  # killed while validating: finish that epoch first
                logger.info("epoch %d was saved but its validation did not finish: validating it "
                            "now", pending["epoch"])
                lr = float(pending.get("lr", lr))
                finish_epoch(dict(pending), True)
            for epoch in range(start_epoch, tc.epochs):
                first = start_iter if epoch == start_epoch else 0
                loader = build_train_loader(
                    ds_train, tc.batch_size, tc.iters_per_epoch * tc.accumulate, seed=tc.seed,
                    epoch=epoch, start_iter=first * tc.accumulate, workers=cfg.data.workers,
                    distributed=info.enabled)
                batches = iter(loader)
                net.train()
                t_epoch = time.perf_counter()
                loss_sum, loss_n = 0.0, 0
                void_batches, batches_seen = 0, 0  # batches without a single labelled pixel
                bar = tqdm(total=tc.iters_per_epoch, initial=first, disable=disable_bar,
                           desc=f"epoch {epoch + 1}/{tc.epochs}", dynamic_ncols=True, leave=False)
                for it in range(first, tc.iters_per_epoch):
                    lr = lr_schedule.lr_at(tc, pos["step"])
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    parts_acc: dict[str, float] = {}
                    step_loss = 0.0
                    for micro in range(tc.accumulate):
                        batch = next(batches)
                        batches_seen += 1
                        void_batches += int(not bool((batch["label"] != ignore).any()))
                        x = batch["image"].to(device, non_blocking=True)
                        y = batch["label"].to(device, non_blocking=True)
                        if tc.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        sync = micro == tc.accumulate - 1 or not info.enabled
                        ctx = contextlib.nullcontext() if sync else net.no_sync()
                        with ctx:
                            with autocast(amp, device):
                                outputs = _forward_train(net, x)
                                loss, parts = criterion(outputs, y)
                                if teacher is not None:
                                    with torch.no_grad():
                                        t_logits = teacher(x)
                                    kd = kd_loss(_main(outputs), t_logits, tc.kd_reduction)
                                    parts["kd"] = kd.detach()
                                    loss = loss + tc.kd_weight * kd
                            nonfinite.fill_(0.0 if torch.isfinite(loss.detach()) else 1.0)
                            D.all_reduce_max(nonfinite)
                            if nonfinite.item():
                                msg = diverged_message(run_dir, epoch, it, pos["step"], loss, lr)
                                raise TrainingDiverged(msg)
                            scaler.scale(loss / tc.accumulate).backward()
                        step_loss += float(loss.detach()) / tc.accumulate
                        for k, v in parts.items():
                            parts_acc[k] = parts_acc.get(k, 0.0) + float(v) / tc.accumulate
                    if tc.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)

                    pos.update(epoch=epoch, iter=it + 1, step=pos["step"] + 1)
                    rng_at_pos = ckpt_io.capture_rng_state()
                    last_loss = step_loss
                    loss_sum += step_loss
                    loss_n += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                    est = meter.tick()
                    if est is not None:
                        cost = est.to_dict()
                        if info.is_main:
                            logger.info("%s", est.describe())
                            rundir.append_metrics(run_dir,
                                                  {"type": "cost", "step": pos["step"], **cost})
                    if info.is_main and tc.log_every and pos["step"] % tc.log_every == 0:
                        rec = {"type": "iter", "epoch": epoch + 1, "iter": it + 1,
                               "step": pos["step"], "lr": lr, "loss": step_loss}
                        rec.update({f"loss_{k}": v for k, v in parts_acc.items()})
                        rundir.append_metrics(run_dir, rec)
                    mid_epoch = it + 1 < tc.iters_per_epoch
                    if tc.save_every and pos["step"] % tc.save_every == 0 and mid_epoch:
                        check_weights()  # every rank, so all stop together
                        save("last.pt")
                    over = budget_s is not None and time.perf_counter() - t_start > budget_s
                    if budget_s is not None and _agree(over, device):
                        out_of_time = True
                        break
                bar.close()

                # ---- end of epoch: position moves to the start of the next epoch
                if pos["iter"] >= tc.iters_per_epoch:
                    pos.update(epoch=epoch + 1, iter=0)
                train_loss = finite_or_none(_global_mean(loss_sum, loss_n, device))
                check_labelled(void_batches, batches_seen, epoch + 1, device, info, cfg)
                record: dict[str, Any] = {"type": "epoch", "epoch": epoch + 1, "step": pos["step"],
                                          "lr": lr, "train_loss": train_loss,
                                          "epoch_seconds": time.perf_counter() - t_epoch,
                                          "peak_memory_mb": peak_memory_mb(device)}
                validate = ds_val is not None and (eval_due(tc, epoch + 1) or out_of_time)
                finish_epoch(record, validate)
                if out_of_time:
                    logger.info("time budget of %.1f min reached after %d steps: stopped (resume "
                                "with --resume and a larger train.time_budget_min)",
                                tc.time_budget_min, pos["step"])
                    break
        except KeyboardInterrupt:
            if info.is_main:
                with deferred_signals("last.pt"):  # a second Ctrl-C / SIGTERM waits for the save
                    path = save("last.pt")
                logger.warning("interrupted: saved %s (epoch %d, iteration %d, step %d)", path,
                               pos["epoch"] + 1, pos["iter"], pos["step"])
            raise
        return TrainResult(run_dir=run_dir, model=model, epoch=pos["epoch"], step=pos["step"],
                           last_loss=last_loss, best=best, last_eval=last_eval, cost=cost,
                           world_size=info.world_size, history=history)
    finally:
        tensorboard.stop(run_dir)
        D.cleanup(info)


def _main(outputs: Any) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _forward_train(net: nn.Module, x: torch.Tensor):
    try:
        return net(x)
    except ValueError as e:
        if "Expected more than 1 value per channel" in str(e):
            raise UserError(
                f"batch {x.shape[0]} of {x.shape[-2]}x{x.shape[-1]} crops leaves a 1x1 feature "
                "map, "
                "which BatchNorm cannot normalise in training: raise train.batch_size or "
                "data.crop_size") from None
        raise


def _agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (ranks must stop at the same step)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(D.all_reduce_max(t).item())


def _global_mean(total: float, n: int, device: torch.device) -> float:
    t = torch.tensor([total, float(n)], dtype=torch.float64, device=device)
    D.all_reduce_sum(t)
    return float(t[0] / t[1]) if t[1] > 0 else math.nan


def _class_weights(tc, ds_train, num_classes: int) -> torch.Tensor | None:
    """Loss weights from the training split's label frequencies (logged, deterministic)."""
    from fasterseg.engine.class_weights import class_weights, label_frequencies

    freq = label_frequencies(ds_train, num_classes)
    weight = class_weights(freq, tc.class_weights, tc.class_weight_max)
    if weight is not None:
        names = getattr(ds_train.label_set, "class_names", [str(i) for i in range(num_classes)])
        logger.info("class weights (%s): %s", tc.class_weights,
                    ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weight.tolist())))
    return weight
