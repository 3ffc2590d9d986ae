"""FasterSeg: neural architecture search for real-time semantic segmentation (ICLR 2020)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    # Lazy so that ``import fasterseg`` (and ``fasterseg --help``) does not import torch.
    if name in ("create_model", "list_models"):
        from fasterseg.models import factory

        return getattr(factory, name)
    raise AttributeError(name)
