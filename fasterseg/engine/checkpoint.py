"""Checkpoints that describe themselves and load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes): the model
state dict, the architecture dict it was built from, the label set, optimiser / schedule / scaler
state, the position in training (epoch, iteration in epoch, step) and the RNG states of Python,
NumPy and torch. So a checkpoint alone rebuilds the network (``load_model``) and resumes exactly.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fasterseg.errors import UserError
from fasterseg.utils.io import torch_save

logger = logging.getLogger(__name__)

FORMAT = "fasterseg-checkpoint"
VERSION = 1


# ---------------------------------------------------------------- RNG states as plain types
def capture_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy, torch CPU and CUDA, as tensors and plain types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state`` (missing parts are left alone)."""
    if "python" in state:
        p = state["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = np.asarray(n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else n["keys"])
        np.random.set_state(
            (n["name"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
             float(n["cached_gaussian"]))
        )
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# ---------------------------------------------------------------- save / load
def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write ``state`` (adds format/version/versions) after checking it is plain.

    Ctrl-C / SIGTERM arriving during the write are held until the file is complete (so the
    "saved last.pt" of an interrupted run is true); a full disk is a one-line ``UserError``
    naming the file, and the previous file stays as it was.
    """
    import fasterseg
    from fasterseg.engine.signals import deferred_signals

    out = {"format": FORMAT, "version": VERSION,
           "versions": {"fasterseg": str(fasterseg.__version__), "torch": str(torch.__version__)}}
    out.update(state)
    _check_plain(out, "checkpoint")
    with deferred_signals(str(path)):
        return torch_save(out, path)


def _check_plain(obj: Any, where: str) -> None:
    """Fail early (while the last good file still exists) if something would need pickle."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return  # exact types: str/float subclasses (TorchVersion, numpy scalars) need pickle
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is not str/int")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} cannot be loaded with weights_only=True")


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load with ``weights_only=True``; a missing or foreign file is a ``UserError``."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise UserError(f"no best.pt or last.pt in run directory {p}")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, pickled objects, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load checkpoint {p} safely (weights_only): {first}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{p} is not a fasterseg checkpoint (got {type(ckpt).__name__})")
    if ckpt.get("format") != FORMAT:
        if "model" not in ckpt:  # a bare state dict: usable only with a known arch
            raise UserError(f"{p} is not a fasterseg checkpoint (no 'format'/'model' entries)")
    return ckpt


def load_resume_state(run_dir: Path, command: str | None = None) -> dict[str, Any]:
    """The ``last.pt`` a resumed run continues from.

    ``command`` (``"search"``) also requires the checkpoint's ``kind`` to be ``fasterseg-<command>``,
    so resuming one kind of run from another's directory is a one-line error, not a key error.
    """
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise UserError(f"nothing to resume: {last} does not exist")
    state = load_checkpoint(last)
    if command is not None and state.get("kind") != f"fasterseg-{command}":
        raise UserError(f"{last} is not a {command} checkpoint (from `fasterseg {command}`)")
    return state


# ---------------------------------------------------------------- model from name / arch / ckpt
def _is_checkpoint_path(spec: str) -> bool:
    p = Path(spec)
    return p.suffix in {".pt", ".pth", ".ckpt"} or p.is_dir()


def load_model(
    spec: str, *, num_classes: int | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a model from a checkpoint, a model name or an arch JSON (random weights).

    Returns (model in eval mode on ``device``, info) where info has ``num_classes``, ``label_set``
    (dict or None), ``config`` (dict or None), ``source`` ('checkpoint'|'random') and ``path``.
    A class-count mismatch with ``num_classes`` is a ``UserError``.
    """
    from fasterseg.models import build_model, create_model

    info: dict[str, Any] = {"label_set": None, "config": None, "path": spec}
    if _is_checkpoint_path(spec):
        ckpt = load_checkpoint(spec)
        if "arch" not in ckpt:
            raise UserError(f"checkpoint {spec} has no stored architecture ('arch')")
        n = int(ckpt.get("num_classes") or 0) or None
        if num_classes is not None and n is not None and n != num_classes:
            names = (ckpt.get("label_set") or {}).get("name", "?")
            raise UserError(
                f"checkpoint {spec} predicts {n} classes ({names}) but the data has {num_classes}"
            )
        try:
            model = build_model(ckpt["arch"], num_classes=n)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot rebuild the architecture stored in {spec}: {e}") from None
        state = ckpt["model"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        # aux heads exist only in train mode; anything else missing is a real mismatch
        bad = [k for k in missing if "aux" not in k]
        if bad:
            raise UserError(f"checkpoint {spec} does not match its architecture: missing {bad[:3]}")
        if unexpected:
            logger.debug("ignored %d unexpected keys (e.g. %s)", len(unexpected), unexpected[0])
        info.update(num_classes=n or num_classes, label_set=ckpt.get("label_set"),
                    config=ckpt.get("config"), source="checkpoint", epoch=ckpt.get("epoch"),
                    metric=ckpt.get("metric"))
    else:
        if Path(spec).suffix == ".json" and not Path(spec).is_file():
            raise UserError(f"architecture file not found: {spec}")
        model = create_model(spec, num_classes=num_classes or 19)
        info.update(num_classes=num_classes or 19, source="random")
    model.to(device).eval()
    return model, info


def label_set_to_dict(label_set: Any) -> dict[str, Any]:
    """A data ``LabelSet`` as plain types for the checkpoint (self-describing predictions)."""
    mapping = getattr(label_set, "train_id_to_label_id", None)
    if isinstance(mapping, dict):
        mapping = [int(mapping.get(i, i)) for i in range(len(label_set.class_names))]
    elif mapping is not None:
        mapping = [int(v) for v in mapping]
    return {
        "name": str(getattr(label_set, "name", "unknown")),
        "class_names": [str(c) for c in label_set.class_names],
        "palette": [[int(v) for v in c] for c in label_set.palette],
        "ignore_index": int(getattr(label_set, "ignore_index", 255)),
        "train_id_to_label_id": mapping,
    }


def arch_to_dict(arch: Any) -> dict[str, Any]:
    """``model.arch`` (Arch or dict) as a JSON-round-tripped plain dict."""
    d = arch.to_dict() if hasattr(arch, "to_dict") else arch
    return json.loads(json.dumps(d))
