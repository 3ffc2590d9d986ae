"""The one interface every deployment path implements, so the ``--auto`` chooser, ``bench``,
``export`` and ``predict`` can treat eager fp32, TorchScript, bf16, int8, onnxruntime and
OpenVINO alike: fp32 NCHW images in, fp32 logits at the input resolution out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Predictor(Protocol):
    """A model prepared for one input size on one machine.

    ``name`` is the candidate's id (e.g. ``jit-fp32``, ``torch-bf16-cl``, ``int8-ort``,
    ``openvino-bf16``); ``backend`` and ``dtype`` are what ``bench --json`` reports; ``info`` holds
    JSON-ready details (calibration source, engine versions, fp32 fallbacks, ...).
    """

    name: str
    backend: str
    dtype: str
    info: dict[str, Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: normalised ``[B, 3, H, W]`` fp32 at the prepared size -> fp32 logits
        ``[B, C, H, W]`` (batch 1 is the contract; larger batches where the path allows)."""
        ...

    def save(self, path: str | Path) -> Path | None:
        """Write the deployable artifact (TorchScript .pt, .onnx, OpenVINO .xml/.bin) to
        ``path`` (suffix chosen by the path) and return it; None when this path has none."""
        ...
