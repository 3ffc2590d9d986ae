"""The training loop's save and validate helpers: when to validate, how, which result is best,
and the checks that keep a diverged or unlabelled run from overwriting a good checkpoint.

Named functions rather than closures so that :mod:`fasterseg.engine.trainer` stays one readable
loop and each check can be tested alone.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn as nn

from fasterseg.config.train import TrainRunConfig
from fasterseg.engine import distributed as D
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)


def eval_due(cfg_train, epoch_done: int) -> bool:
    """Validate after epoch 1, every ``eval_every`` epochs and after the last one."""
    every = cfg_train.eval_every
    if every <= 0:
        return False
    return epoch_done == 1 or epoch_done % every == 0 or epoch_done == cfg_train.epochs


def diverged_message(
    run_dir: Path, epoch: int, it: int, step: int, loss: torch.Tensor, lr: float
) -> str:
    last = run_dir / "last.pt"
    kept = f"last good checkpoint kept: {last}" if last.is_file() else "no checkpoint was saved yet"
    return (f"loss became {float(loss.detach())} at epoch {epoch + 1}, iteration {it + 1} (after "
            f"{step} steps, lr {lr:.3g}); training stopped, {kept}. Try a lower train.lr, "
            "train.grad_clip or train.amp=off")


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of parameters / buffers (BN statistics too) holding NaN or inf; [] if all finite."""
    items = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    if not items:
        return []
    ok = torch.stack([torch.isfinite(v).all() for _, v in items])
    if bool(ok.all()):  # one device sync
        return []
    return [k for (k, _), good in zip(items, ok.tolist()) if not good]


def diverged_weights_message(run_dir: Path, pos: dict, bad: list[str], lr: float) -> str:
    last = run_dir / "last.pt"
    kept = f"last good checkpoint kept: {last}" if last.is_file() else "no checkpoint was saved yet"
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return (f"the weights became NaN/inf ({bad[0]}{more}) after {pos['step']} steps (lr "
            f"{lr:.3g}), not saved; training stopped, {kept}. Try a lower train.lr, "
            "train.grad_clip or train.amp=off")


def finite_or_none(v: float | None) -> float | None:
    """JSON has no NaN: an undefined metric is written as null."""
    return None if v is None or not math.isfinite(v) else float(v)


def check_labelled(void: int, seen: int, epoch: int, device: torch.device, info: D.DistInfo,
                    cfg: TrainRunConfig) -> None:
    """Warn about batches whose labels are all void; stop if a whole epoch had no labelled pixel.

    Such batches give a zero loss: a run on all-void labels would "train" with loss 0 and a NaN
    validation score instead of saying the labels are wrong.
    """
    t = torch.tensor([float(void), float(seen)], dtype=torch.float64, device=device)
    D.all_reduce_sum(t)
    void, seen = int(t[0]), int(t[1])
    if not void:
        return
    check = f"`fasterseg data check {cfg.data.root or 'ROOT'} --preset {cfg.data.preset}`"
    if void == seen:
        raise UserError(f"epoch {epoch}: none of its {seen} training batches has a labelled pixel "
                        f"(every label is void/ignore), so there is nothing to learn; check the "
                        f"labels with {check}")
    if info.is_main:
        logger.warning("epoch %d: %d of %d training batches had no labelled pixel (all "
                       "void/ignore); check the labels with %s", epoch, void, seen, check)


def better(metric: dict, best: dict | None) -> bool:
    v = metric["value"]
    if v is None or v != v:
        return best is None
    if best is None or best.get("value") is None or best["value"] != best["value"]:
        return True
    if best.get("name") != metric["name"]:
        return True
    return v < best["value"] if metric["name"].endswith("loss") else v > best["value"]


def validate(model: nn.Module, ds_val, cfg: TrainRunConfig, num_classes: int, label_dict: dict,
              device: torch.device, info: D.DistInfo, amp: str = "off") -> dict:
    from fasterseg.data import build_eval_loader
    from fasterseg.evaluation import evaluate

    loader = build_eval_loader(ds_val, workers=cfg.data.workers, distributed=info.enabled)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    m = evaluate(model, loader, num_classes=num_classes, device=device,
                 ignore_index=label_dict["ignore_index"], class_names=label_dict["class_names"],
                 max_images=cfg.train.eval_max_images, amp_dtype=amp_dtype)
    m.pop("confusion", None)
    return m
