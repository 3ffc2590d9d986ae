"""Parameters and multiply-accumulates (MACs, the paper's "FLOPs") of a network.

MACs count convolutions and linear layers (``C_out * C_in/groups * kH * kW`` per output pixel);
BatchNorm, ReLU and bilinear resizes are not counted, as in the profilers the paper used.
Counting runs the model once on a ``meta`` tensor when possible, so 1024x2048 costs nothing.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


def _conv_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        # The sliced forward of a superkernel may use fewer channels than declared.
        c_out = out.shape[1]
        k = m.kernel_size[0] * m.kernel_size[1]
        c_in = m._last_in_channels if hasattr(m, "_last_in_channels") else m.in_channels
        return int(out.shape[0] * out.shape[2] * out.shape[3] * c_out * (c_in // m.groups) * k)
    if isinstance(m, nn.Linear):
        return int(out.numel() // out.shape[-1] * m.in_features * m.out_features)
    return 0


def count_macs(model: nn.Module, size: tuple[int, int], batch: int = 1) -> tuple[int, dict[str, int]]:
    """Total MACs for one forward at ``size`` (H, W) in eval mode, and MACs per top-level child."""
    per_module: dict[str, int] = defaultdict(int)
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def pre_hook(m, inputs):
        m._last_in_channels = inputs[0].shape[1]

    def hook(m, inputs, out):
        top = names[m].split(".")[0]
        per_module[top] += _conv_macs(m, out)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_pre_hook(pre_hook))
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        x = torch.empty(batch, 3, *size, device="meta")
        try:
            with torch.no_grad():
                _run_meta(model, x)
        except Exception:
            per_module.clear()
            with torch.no_grad():
                model(torch.zeros(batch, 3, *size, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
        for m in model.modules():
            if hasattr(m, "_last_in_channels"):
                del m._last_in_channels
    return sum(per_module.values()), dict(per_module)


def _run_meta(model: nn.Module, x: torch.Tensor) -> None:
    """Forward on meta tensors with a meta copy of the parameters (the model is left untouched)."""
    from torch.func import functional_call

    params = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
    buffers = {k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()}
    functional_call(model, {**params, **buffers}, (x,))


def count_params(model: nn.Module) -> tuple[int, dict[str, int]]:
    """Total unique parameters and parameters per top-level child (shared modules once)."""
    per: dict[str, int] = defaultdict(int)
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        per[name.split(".")[0]] += p.numel()
    return sum(per.values()), dict(per)


def count_complexity(model: nn.Module, size: tuple[int, int]) -> dict:
    """Params (total incl. auxiliary heads, and inference-only) and MACs at ``size``."""
    params_total, params_per = count_params(model)
    aux = params_per.get("aux_heads", 0)
    macs, macs_per = count_macs(model, size)
    breakdown = [
        {"module": k, "params": params_per.get(k, 0), "macs": macs_per.get(k, 0)}
        for k in dict.fromkeys([*params_per, *macs_per])
    ]
    return {
        "params_total": params_total,
        "params_inference": params_total - aux,
        "macs": macs,
        "size": list(size),
        "breakdown": breakdown,
    }
