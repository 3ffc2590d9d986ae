"""The shipped co-search steps: what each step's gradients reach, the latency term, the widths."""

import copy

import pytest
import torch

from fasterseg.config.search import SearchConfig
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.search.state import SearchState
from fasterseg.search.steps import SEARCH_PLAN, arch_step, relaxed_latency, weight_step
from fasterseg.supernet import Supernet, downsample_labels, gumbel_softmax_hard

SPACE = SearchSpaceConfig(num_layers=3, ratios=[4, 8], teacher_stem_ratio=8, teacher_head_ratio=8)
CFG = SearchConfig(sandwich_random=1, latency_weight=0.5)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    net = Supernet(SPACE, num_classes=4).train()
    with torch.no_grad():  # break the symmetry of the uniform initialisation
        for p in net.arch_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def latency():
    from fasterseg.latency import LatencyTable, RelaxedLatency
    from fasterseg.latency.build import space_blocks

    g = torch.Generator().manual_seed(0)
    entries = {b.key: 0.05 + float(torch.rand((), generator=g)) for b in space_blocks(SPACE, (256, 512))}
    table = LatencyTable(entries, {"input_size": [256, 512]})
    return RelaxedLatency(table, SPACE, None, SPACE.student_stem_ratio, SPACE.student_head_ratio)


def _state(base, latency=None, lam=0.5, phase="search"):
    cfg = SearchConfig(**{**CFG.__dict__, "latency_weight": lam})
    return SearchState.create(copy.deepcopy(base), cfg, phase=phase, latency=latency)


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.randint(0, 4, (2, 64, 64), generator=g)
    return x, downsample_labels(y, 8)


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


@pytest.mark.parametrize("phase", ["pretrain", "search"])
def test_weight_step_updates_weights_only(base, phase):
    st = _state(base, phase=phase)
    arch, weights = st.model.arch_parameters(), st.weights
    a0, w0 = _snapshot(arch), _snapshot(weights)
    loss = weight_step(st, *_batch(), phase)
    assert loss > 0
    assert not any(_changed(a0, arch)), "the weight step moved architecture parameters"
    assert all(p.grad is None for p in arch), "the weight step computed architecture gradients"
    assert sum(_changed(w0, weights)) > len(weights) // 4


def test_arch_step_updates_arch_params_only(base, latency):
    st = _state(base, latency)
    arch, weights = st.model.arch_parameters(), st.weights
    a0, w0 = _snapshot(arch), _snapshot(weights)
    loss, lat = arch_step(st, *_batch())
    assert loss > 0 and lat is not None and lat > 0
    assert not any(_changed(w0, weights)), "the architecture step moved weights"
    assert all(p.grad is None for p in weights), "the architecture step computed weight gradients"
    for role in ("teacher", "student"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in st.model.arch_parameters(role)), role
    assert all(_changed(a0, arch)[:3]), "alpha of the teacher did not move"


def test_latency_term_reaches_the_student_only(base, latency):
    grads = {}
    for lam in (0.0, 5.0):
        st = _state(base, latency, lam)
        torch.manual_seed(3)  # same Gumbel widths in both runs
        arch_step(st, *_batch())
        grads[lam] = {r: [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                          for p in st.model.arch_parameters(r)] for r in ("teacher", "student")}
    for a, b in zip(grads[0.0]["teacher"], grads[5.0]["teacher"]):
        assert torch.equal(a, b), "the latency term changed the teacher's gradients"
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0]["student"], grads[5.0]["student"]))


def test_steps_run_the_sandwich_widths(base, latency):
    st = _state(base, latency)
    calls = []
    forward = st.model.forward

    def spy(x, arch="student", widths=None, combos=None):
        calls.append((arch, widths))
        return forward(x, arch, widths, combos)

    st.model.forward = spy
    x, y = _batch()
    weight_step(st, x, y, "pretrain")
    assert calls == [("teacher", "max"), ("teacher", "min"), ("teacher", "random")]
    calls.clear()
    weight_step(st, x, y, "search")
    assert tuple(calls) == SEARCH_PLAN
    calls.clear()
    arch_step(st, x, y)
    assert tuple(calls) == SEARCH_PLAN == (("teacher", "max"), ("student", "gumbel"),
                                           ("student", "max"), ("student", "min"))


def test_gumbel_sampled_latency_gradient_uses_the_sampled_entry_only(base, latency):
    from fasterseg.search.steps import _sampled_entry_only

    logits = torch.randn(4, 3, requires_grad=True)
    cost = torch.tensor([1.0, 2.0, 5.0])
    torch.manual_seed(0)
    hard = gumbel_softmax_hard(logits)
    out = _sampled_entry_only(hard)
    assert torch.equal(out, hard.detach())
    (out * cost).sum().backward()
    g_sampled = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(0)
    hard = gumbel_softmax_hard(logits)
    idx = hard.detach().argmax(-1)
    (hard.gather(-1, idx[:, None]).squeeze(-1) * cost[idx]).sum().backward()  # the authors' form
    assert torch.allclose(g_sampled, logits.grad)
    logits.grad = None
    torch.manual_seed(0)
    (gumbel_softmax_hard(logits) * cost).sum().backward()  # "gumbel": the whole row
    assert not torch.allclose(g_sampled, logits.grad)
    # and in the latency model: same value as "gumbel", different gamma gradient
    params = copy.deepcopy(base).arch["student"]
    vals, grads = {}, {}
    for mode in ("gumbel", "gumbel_sampled"):
        params.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        lat = relaxed_latency(latency, params, mode="decoupled", weights=(0.002, 0.994, 0.004),
                              gamma=mode, tau=1.0, with_grad=True)
        lat.backward()
        vals[mode], grads[mode] = float(lat.detach()), [g.grad.clone() for g in params.gamma]
    assert vals["gumbel"] == pytest.approx(vals["gumbel_sampled"], rel=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(grads["gumbel"], grads["gumbel_sampled"]))
