"""The two steps of the co-search (paper appendix F, facts sections 4-6), as importable functions.

``weight_step``: the supernet weights, on a trainA batch. Pretraining: the sandwich rule with the
teacher's stem and heads (widest, narrowest and ``sandwich_random`` random widths, as the authors
do). Search: teacher widest + student Gumbel, widest, narrowest. SGD with a gradient-norm clip.

``arch_step``: both architectures, on a trainB batch. Same four passes as the search's weight
step; each pass differentiates only its own architecture's parameters; ``lambda * LAT`` (the
student's relaxed latency) is added to the student's last pass only. One Adam per architecture.

Every pass runs its backward right away, so graphs are freed pass by pass; ``backward(inputs=...)``
asks autograd only for the gradients the step uses (no weight gradients in the architecture step,
no architecture gradients in the weight step). The losses equal the authors' summed loss.
"""

from __future__ import annotations

import contextlib
import math

import torch

from fasterseg.engine import distributed as D
from fasterseg.engine.amp import autocast
from fasterseg.search.state import SearchDiverged, SearchState
from fasterseg.supernet.arch_params import gumbel_softmax_hard

Plan = tuple[tuple[str, str], ...]
# (architecture, widths) of each forward pass; the search's weight step uses the same four.
SEARCH_PLAN: Plan = (("teacher", "max"), ("student", "gumbel"), ("student", "max"),
                     ("student", "min"))


def weight_plan(phase: str, sandwich_random: int) -> Plan:
    """The passes of a weight step: the sandwich rule in pretraining, ``SEARCH_PLAN`` after."""
    if phase == "pretrain":
        return (("teacher", "max"), ("teacher", "min")) + (("teacher", "random"),) * sandwich_random
    return SEARCH_PLAN


def check_finite(loss: torch.Tensor, what: str) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise SearchDiverged(f"{what} loss became {value}", what, value)


def weight_step(state: SearchState, x: torch.Tensor, y8: torch.Tensor, phase: str) -> float:
    """One SGD step of the supernet weights; returns the summed loss of the passes.

    ``y8``: labels at 1/8 resolution (``downsample_labels``). Gradients reach the weights only.
    """
    model, weights = state.model, state.weights
    total = 0.0
    for arch, widths in weight_plan(phase, state.cfg.sandwich_random):
        with autocast(state.amp, state.device):
            loss = state.seg(model(x, arch, widths), y8)
        check_finite(loss, "weight")
        loss.backward(inputs=weights)
        total += float(loss.detach())
    D.allreduce_grads(weights)
    if state.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, state.cfg.grad_clip)
    state.sgd.step()
    state.sgd.zero_grad(set_to_none=True)
    return total


def arch_step(state: SearchState, x: torch.Tensor, y8: torch.Tensor) -> tuple[float, float | None]:
    """One Adam step of both architectures; returns (summed loss, relaxed student latency or None).

    Each pass back-propagates into its own architecture's parameters only; the latency term is
    added on the student's last pass (once per step), so it never reaches the teacher.
    """
    model = state.model
    for opt in state.arch_opts.values():
        opt.zero_grad(set_to_none=True)
    total, lat_val = 0.0, None
    use_latency = state.latency is not None and state.latency_weight > 0
    for i, (arch, widths) in enumerate(SEARCH_PLAN):
        with autocast(state.amp, state.device):
            loss = state.seg(model(x, arch, widths), y8)
        if use_latency and arch == "student" and i == len(SEARCH_PLAN) - 1:
            lat = student_latency(state, with_grad=True)
            lat_val = float(lat.detach())
            loss = loss + state.latency_weight * lat
        check_finite(loss, "architecture")
        loss.backward(inputs=model.arch_parameters(arch))
        total += float(loss.detach())
    D.allreduce_grads(model.arch_parameters())
    for opt in state.arch_opts.values():
        opt.step()
    return total, lat_val


def student_latency(state: SearchState, with_grad: bool, mode: str | None = None) -> torch.Tensor:
    """The student's relaxed latency (ms) with the configured mode, weights and width input."""
    c = state.cfg
    return relaxed_latency(state.latency, state.model.arch["student"],
                           mode=mode or c.latency_mode, weights=c.latency_weights,
                           gamma=c.latency_gamma, tau=c.tau, with_grad=with_grad)


def relaxed_latency(
    lat_model, params, *, mode: str, weights, gamma: str, tau: float, with_grad: bool
) -> torch.Tensor:
    """Latency (ms) of one architecture from normalised parameters (eq. 3 or the naive term).

    ``gamma``: the widths fed to the latency model. ``softmax``: the width distribution;
    ``gumbel``: a hard Gumbel sample whose straight-through gradient reaches every width of the
    table row; ``gumbel_sampled``: the same sample, but only the sampled width's score carries
    gradient (the authors' code multiplies the looked-up latency by the sampled ratio score).
    """
    ctx = contextlib.nullcontext() if with_grad else torch.no_grad()
    with ctx:
        alphas = [torch.softmax(a, -1).double() for a in params.alpha]
        betas = [None] + [torch.softmax(b, -1).double() for b in params.beta]
        gammas = None
        if params.has_gamma:
            if gamma == "softmax":
                gammas = [torch.softmax(g, -1).double() for g in params.gamma]
            elif gamma in ("gumbel", "gumbel_sampled"):
                gammas = [gumbel_softmax_hard(g, tau).double() for g in params.gamma]
                if gamma == "gumbel_sampled":
                    gammas = [_sampled_entry_only(h) for h in gammas]
            else:
                raise ValueError(f"unknown latency_gamma {gamma!r}")
        return lat_model(alphas, betas, gammas, mode=mode, weights=tuple(weights)).float()


def _sampled_entry_only(hard: torch.Tensor) -> torch.Tensor:
    """The same one-hot values, with gradient only through the sampled entry's score (value 1)."""
    idx = hard.detach().argmax(-1, keepdim=True)
    return hard.detach() * hard.gather(-1, idx)
