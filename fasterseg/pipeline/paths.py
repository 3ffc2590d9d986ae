"""Where the shipped presets live (``configs/`` at the repository root)."""

from __future__ import annotations

from pathlib import Path

from fasterseg.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]


def config_path(rel: str) -> Path:
    """A preset under ``configs/``: the working directory's first, then the installed checkout's."""
    for base in (Path.cwd() / "configs", REPO_ROOT / "configs"):
        p = base / rel
        if p.is_file():
            return p
    raise UserError(f"preset configs/{rel} not found (run from the fasterseg checkout)")


def resolve_preset(path: str) -> str:
    """A config path as given if it exists, else the same path under the checkout's root."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return str(p)
    alt = REPO_ROOT / p
    return str(alt) if alt.is_file() else str(p)
