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


def _resolve_checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory's ``best.pt`` (else ``last.pt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise UserError(f"no best.pt or last.pt in run directory {p}")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint file or a run directory's ``best.pt`` (else ``last.pt``).

    Always ``weights_only=True`` (no pickled code runs); a missing, corrupt or foreign file is a
    one-line ``UserError``.
    """
    p = _resolve_checkpoint_file(path)
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
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _is_checkpoint_path(spec: str | os.PathLike) -> bool:
    """True for a checkpoint file or a run directory; False for a model name or an arch JSON.

    A ``.pt``/``.pth``/``.ckpt`` path (existing or not, so a typo says "checkpoint not found"), a
    directory, or an existing file that is not ``.json`` counts as a checkpoint.
    """
    from fasterseg.models import list_models

    s = str(spec)
    if s in list_models():
        return False
    p = Path(s).expanduser()
    if p.suffix.lower() in CHECKPOINT_SUFFIXES or p.is_dir():
        return True
    return p.is_file() and p.suffix.lower() != ".json"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # "Error(s) in loading state_dict ...:" then the real reason
        if ln.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return ln
    return lines[0] if lines else type(e).__name__


def load_model(
    spec: str | os.PathLike,
    *,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The one model loader of every command: checkpoint, run directory, model name or arch JSON.

    ``spec`` is a checkpoint (``.pt``; trained weights), a run directory (its ``best.pt``, else
    ``last.pt``), a published model name (``fasterseg_student``) or an architecture JSON (random
    weights). Returns (model in eval mode on ``device``, info) where info has ``source`` and
    ``weights`` (both 'checkpoint' or 'random'), ``path`` (``spec``), ``checkpoint`` (the file
    loaded, or None), ``num_classes``, ``label_set`` and ``config`` (dicts or None), ``epoch``,
    ``metric``. A checkpoint whose class count differs from ``num_classes`` is refused; names and
    JSON files are built with ``num_classes`` (default: the architecture's own). Every failure is
    a one-line ``UserError``.
    """
    from fasterseg.models import build_model, create_model

    spec = str(spec)
    info: dict[str, Any] = {"label_set": None, "config": None, "path": spec, "checkpoint": None,
                            "epoch": None, "metric": None}
    if num_classes is not None and int(num_classes) < 1:
        raise UserError(f"the number of classes must be >= 1, got {num_classes}")
    if _is_checkpoint_path(spec):
        file = _resolve_checkpoint_file(spec)
        ckpt = load_checkpoint(file)
        if "arch" not in ckpt:
            kind = str(ckpt.get("kind") or "")
            if kind == "fasterseg-search":
                raise UserError(
                    f"{file} is a search checkpoint (the supernet), not a network: derive one with "
                    f"`fasterseg derive RUN` and train it, or pass a train checkpoint"
                )
            raise UserError(f"checkpoint {file} has no stored architecture ('arch')")
        if not isinstance(ckpt.get("model"), dict):
            raise UserError(f"checkpoint {file} has no model weights ('model')")
        arch_n = ckpt["arch"].get("num_classes") if isinstance(ckpt["arch"], dict) else None
        try:
            n = int(ckpt.get("num_classes") or arch_n or 0) or None
        except (TypeError, ValueError):
            raise UserError(f"checkpoint {file} has an invalid 'num_classes'") from None
        if num_classes is not None and n is not None and n != num_classes:
            names = (ckpt.get("label_set") or {}).get("name", "?")
            raise UserError(
                f"checkpoint {file} predicts {n} classes ({names}) but {num_classes} are expected "
                "(from the data or --num-classes)"
            )
        try:
            model = build_model(ckpt["arch"], num_classes=n)
        except UserError as e:
            raise UserError(f"cannot rebuild the architecture stored in {file}: {e}") from None
        except Exception as e:
            raise UserError(
                f"cannot rebuild the architecture stored in {file}: {_first_line(e)}"
            ) from None
        try:
            missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
        except Exception as e:  # shape mismatches, non-tensor entries
            raise UserError(
                f"checkpoint {file} does not match its architecture: {_first_line(e)}"
            ) from None
        # auxiliary heads run in training only: a checkpoint saved without them still predicts
        bad = [k for k in missing if not k.startswith("aux_heads.")]
        if bad or unexpected:
            what = (f"missing {len(bad)} weights, e.g. {bad[0]}" if bad
                    else f"{len(unexpected)} unknown weights, e.g. {unexpected[0]}")
            raise UserError(f"checkpoint {file} does not match its architecture: {what}")
        info.update(num_classes=model.num_classes, label_set=ckpt.get("label_set"),
                    config=ckpt.get("config"), source="checkpoint", checkpoint=str(file),
                    epoch=ckpt.get("epoch"), metric=ckpt.get("metric"),
                    class_names=ckpt.get("class_names"))
    else:
        if Path(spec).suffix.lower() == ".json" and not Path(spec).expanduser().is_file():
            raise UserError(f"architecture file not found: {spec}")
        model = create_model(spec, num_classes=num_classes)
        info.update(num_classes=model.num_classes, source="random")
    info["weights"] = info["source"]
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
