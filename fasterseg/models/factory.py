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
    """Name, architecture JSON, checkpoint or run directory -> (model, info).

    The same loader as every command's: ``fasterseg.engine.checkpoint.load_model`` (kept here so
    ``from fasterseg.models import load_model`` goes on working). The model is in eval mode.
    """
    from fasterseg.engine.checkpoint import load_model as _load_model

    return _load_model(spec, num_classes=num_classes, device=device)
