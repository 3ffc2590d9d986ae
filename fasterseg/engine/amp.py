"""Mixed precision: one autocast context for training and search (fp32 stays the reference)."""

from __future__ import annotations

import contextlib

import torch


def autocast(amp: str, device: torch.device):
    """``off`` -> no-op; ``bf16`` / ``fp16`` -> ``torch.autocast`` on the device's type."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
