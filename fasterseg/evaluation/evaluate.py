"""Evaluate a model over a loader: one confusion matrix, optional prediction files.

Used by ``fasterseg eval``, by the training loop's validation and by the supernet search. It runs
in the calling process, one image at a time (memory bounded by one image), and shards are merged
with a single all-reduce under DDP: no worker processes per model (the official evaluator's
spawned workers were its main out-of-memory source).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fasterseg.evaluation.inference import infer_image
from fasterseg.evaluation.metrics import ConfusionMatrix

logger = logging.getLogger(__name__)

# on_prediction(name, pred [H,W] int64 numpy, image [3,H,W] normalised tensor on CPU)
PredictionCallback = Callable[[str, np.ndarray, torch.Tensor], None]


def evaluate(
    model: torch.nn.Module,
    loader,
    *,
    num_classes: int,
    device: str | torch.device = "cpu",
    ignore_index: int = 255,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int | None = None,
    on_prediction: PredictionCallback | None = None,
    progress: bool | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """Run ``model`` over ``loader`` (batches of dict(image, label, name)) and return metrics.

    Returns ``miou``, ``aacc``, ``macc`` (fractions), ``per_class_iou``/``per_class_acc`` (name ->
    fraction, ``nan`` for classes absent everywhere), ``images`` (count over all processes),
    ``seconds`` and ``confusion`` (the [C, C] int64 count matrix as a tensor on CPU).
    The model's train/eval mode is restored afterwards.
    """
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    images = 0
    t0 = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_images is not None and total is not None:
        total = min(total, max_images)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, total=total, desc="eval", disable=disable, leave=False):
                imgs = batch["image"]
                labels = batch.get("label")
                names = batch.get("name", [f"{images + i:06d}" for i in range(imgs.shape[0])])
                if isinstance(names, str):
                    names = [names]
                if imgs.dim() == 3:
                    imgs = imgs.unsqueeze(0)
                    labels = labels.unsqueeze(0) if labels is not None else None
                for b in range(imgs.shape[0]):
                    if max_images is not None and images >= max_images:
                        break
                    img = imgs[b].to(device)
                    use_amp = amp_dtype is not None
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        probs = infer_image(model, img, flip=flip, scales=scales, window=window,
                                            num_classes=num_classes)
                    pred = probs.argmax(0)
                    if labels is not None:
                        cm.update(pred, labels[b].to(device))
                    if on_prediction is not None:
                        on_prediction(str(names[b]), pred.cpu().numpy(), imgs[b].cpu())
                    images += 1
                if max_images is not None and images >= max_images:
                    break
    finally:
        model.train(was_training)
    cm.all_reduce()
    images = _sum_across_processes(images, device)
    metrics = cm.compute(class_names)
    metrics["images"] = images
    metrics["seconds"] = time.perf_counter() - t0
    metrics["confusion"] = cm.mat.cpu()
    return metrics


def _sum_across_processes(n: int, device: torch.device) -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([n], dtype=torch.int64, device=device)
        dist.all_reduce(t)
        return int(t.item())
    return n


def format_table(metrics: dict) -> str:
    """Per-class IoU/Acc table (percent) and the mean row, as printed by ``fasterseg eval``."""
    names = list(metrics["per_class_iou"])
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
    acc = metrics.get("per_class_acc", {})
    for n in names:
        lines.append(f"{n:<{width}}  {_pct(metrics['per_class_iou'][n])}  {_pct(acc.get(n))}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mean':<{width}}  {_pct(metrics['miou'])}  {_pct(metrics['macc'])}")
    lines.append(f"aAcc {_pct(metrics['aacc']).strip()}  mIoU {_pct(metrics['miou']).strip()}  "
                 f"mAcc {_pct(metrics['macc']).strip()}  images {metrics.get('images', '?')}")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    if v is None or v != v:
        return f"{'-':>6}"
    return f"{100 * v:6.2f}"


def save_confusion(
    confusion: torch.Tensor | np.ndarray,
    out_dir: str | Path,
    class_names: Sequence[str],
    plot: bool = False,
) -> list[Path]:
    """Write ``confusion.npy`` and ``confusion.csv`` (rows = ground truth) and optionally a PNG."""
    from fasterseg.utils.io import atomic_write

    out = Path(out_dir)
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.cpu().numpy()
    mat = np.asarray(confusion, dtype=np.int64)
    paths = [atomic_write(out / "confusion.npy", lambda f: np.save(f, mat), mode="wb")]

    def _csv(f) -> None:
        f.write("gt\\pred," + ",".join(class_names) + "\n")
        for name, row in zip(class_names, mat):
            f.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")

    paths.append(atomic_write(out / "confusion.csv", _csv))
    if plot:
        paths.append(_plot_confusion(mat, out / "confusion.png", class_names))
    return paths


def _plot_confusion(mat: np.ndarray, path: Path, class_names: Sequence[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fasterseg.utils.io import atomic_write

    rows = mat.sum(1, keepdims=True).clip(min=1)
    norm = mat / rows
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion (row-normalised)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return path
