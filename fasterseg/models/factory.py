"""Named models (timm style): ``create_model(name_or_arch_path)`` and ``list_models()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fasterseg.arch.schema import Arch, load_arch, published_arch_path
from fasterseg.errors import UserError
from fasterseg.models.network import FasterSegNet

_PUBLISHED = ("fasterseg_student", "fasterseg_teacher")


def list_models() -> list[str]:
    """Names accepted by ``create_model`` (besides paths to architecture JSON files)."""
    return list(_PUBLISHED)


def build_model(arch: Arch | dict, num_classes: int | None = None) -> FasterSegNet:
    """Build a derived network from an ``Arch`` or its dict form."""
    if isinstance(arch, dict):
        arch = Arch.from_dict(arch)
    return FasterSegNet(arch, num_classes)


def resolve_arch(name_or_path: str | Path) -> Arch:
    """A published name or a path to an architecture JSON -> validated ``Arch``."""
    s = str(name_or_path)
    if s in _PUBLISHED:
        return load_arch(published_arch_path(s))
    p = Path(s)
    if p.suffix == ".json" or p.exists():
        return load_arch(p)
    raise UserError(
        f"unknown model {s!r}: use one of {', '.join(_PUBLISHED)} or a path to an architecture JSON"
    )


def create_model(name_or_path: str | Path, num_classes: int | None = None, **_: Any) -> FasterSegNet:
    """Create a FasterSeg network with fresh (Kaiming) weights."""
    return build_model(resolve_arch(name_or_path), num_classes)


def fasterseg_student(num_classes: int = 19, **kw: Any) -> FasterSegNet:
    """The published FasterSeg student (paper Table 7): 1/32 + 1/16 branches, 3 shared cells."""
    return create_model("fasterseg_student", num_classes=num_classes, **kw)


def fasterseg_teacher(num_classes: int = 19, **kw: Any) -> FasterSegNet:
    """The published co-searched teacher: full width, no skips, 4 shared cells."""
    return create_model("fasterseg_teacher", num_classes=num_classes, **kw)


def load_model(spec: str | Path, num_classes: int | None = None, device: Any = "cpu"):
    """Name, architecture JSON or checkpoint (``.pt`` with ``arch`` and ``model``) -> (model, info).

    A checkpoint restores its weights; names and JSON files give fresh weights (handy for
    benchmarking and export before training).
    """
    import torch

    s = str(spec)
    info: dict[str, Any] = {"source": s, "weights": "random"}
    if s.endswith((".pt", ".pth")):
        p = Path(s)
        if not p.is_file():
            raise UserError(f"checkpoint not found: {p}")
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt file or foreign pickle
            raise UserError(f"cannot read checkpoint {p}: {e}") from None
        if not isinstance(ckpt, dict) or "arch" not in ckpt or "model" not in ckpt:
            raise UserError(f"{p} is not a fasterseg checkpoint (needs 'arch' and 'model' entries)")
        model = build_model(ckpt["arch"], num_classes or ckpt.get("num_classes"))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise UserError(f"checkpoint {p} does not match its architecture: {e}") from None
        info.update(weights="checkpoint", epoch=ckpt.get("epoch"), class_names=ckpt.get("class_names"))
    else:
        model = create_model(s, num_classes)
    return model.to(device), info
