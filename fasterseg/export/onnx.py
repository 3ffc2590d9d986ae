"""ONNX export with the weights inside the file, and an onnxruntime parity check."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fasterseg.errors import UserError
from fasterseg.utils.io import atomic_write

log = logging.getLogger(__name__)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int],
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (eval mode, batch x 3 x H x W -> logits) to a self-contained ONNX file.

    The TorchScript-based exporter is used because it writes bilinear ``align_corners=True``
    resizes as a single standard ONNX ``Resize`` that onnxruntime and TensorRT both run.
    """
    model = model.eval()
    x = torch.zeros(1, 3, *size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
        )
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data), mode="wb")


def verify_onnx(
    model: nn.Module, path: str | Path, size: tuple[int, int], seed: int = 0
) -> dict:
    """Run onnxruntime and PyTorch on the same random input; report the max abs difference."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("--verify needs onnxruntime (pip install onnxruntime)") from None
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *size, generator=g)
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    diff = float(np.abs(out - ref).max())
    scale = float(np.abs(ref).max())
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    return {"max_abs_diff": diff, "max_abs_ref": scale, "argmax_agreement": agree,
            "output_shape": list(out.shape)}
