"""Supernet: gradients to alpha/beta/gamma (and through the latency term), Gumbel sampling,
per-width BatchNorm, teacher/student weight sharing, shapes and the NAS vocabulary."""

import pytest
import torch
import torch.nn.functional as F

from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.supernet import Supernet, gumbel_softmax_hard, sample_widths
from fasterseg.supernet.arch_params import gamma_rows

SPACE = SearchSpaceConfig(num_layers=4, ratios=[4, 8], teacher_stem_ratio=8, teacher_head_ratio=8)
SIZE = (64, 128)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Supernet(SPACE, num_classes=5)


def _x():
    return torch.randn(2, 3, *SIZE)


def test_arch_parameter_shapes_follow_the_convention(net):
    L = SPACE.num_layers
    for role in ("teacher", "student"):
        p = net.arch[role]
        assert [tuple(a.shape) for a in p.alpha] == [(L - j, 5) for j in range(3)]
        assert [tuple(b.shape) for b in p.beta] == [(L - j - 1, 2) for j in (1, 2)]
    assert net.arch["teacher"].has_gamma is False and len(net.arch["teacher"].gamma) == 0
    assert [tuple(g.shape) for g in net.arch["student"].gamma] == [(gamma_rows(L, j), 2) for j in range(3)]
    ids = {id(p) for p in net.arch_parameters()}
    assert ids.isdisjoint(id(p) for p in net.weight_parameters())
    assert len(ids) + len(net.weight_parameters()) == len(list(net.parameters()))


def test_outputs_every_combo_at_one_eighth_in_train_and_full_in_eval(net):
    net.train()
    out = net(_x(), "student")
    assert set(out) == {"8", "16", "32", "8,16", "8,32", "16,32"}
    assert all(v.shape == (2, 5, SIZE[0] // 8, SIZE[1] // 8) for v in out.values())
    net.eval()
    with torch.no_grad():
        out = net(_x(), "teacher")
    net.train()
    assert all(v.shape == (2, 5, *SIZE) for v in out.values())


def test_gradients_reach_alpha_beta_gamma(net):
    net.zero_grad(set_to_none=True)
    out = net(_x(), "student", "gumbel")
    sum(F.cross_entropy(v, torch.randint(0, 5, (2, 8, 16))) for v in out.values()).backward()
    s = net.arch["student"]
    for group in (s.alpha, s.beta, s.gamma):
        for p in group:
            assert p.grad is not None and p.grad.abs().sum() > 0
    # the teacher's parameters are untouched by a student pass
    assert all(p.grad is None for p in net.arch_parameters("teacher"))


def test_latency_term_gradients(tmp_path):
    from fasterseg.engine.search_loop import relaxed_latency
    from fasterseg.latency import LatencyTable, RelaxedLatency
    from fasterseg.latency.build import space_blocks

    g = torch.Generator().manual_seed(0)
    blocks = space_blocks(SPACE, (256, 512))
    table = LatencyTable({b.key: 0.01 + float(torch.rand((), generator=g)) for b in blocks},
                         {"input_size": [256, 512]})
    lat = RelaxedLatency(table, SPACE, None, SPACE.student_stem_ratio, SPACE.student_head_ratio)
    torch.manual_seed(0)
    net = Supernet(SPACE, 5)
    s = net.arch["student"]
    with torch.no_grad():  # break the symmetry of the uniform initialisation
        for p in s.parameters():
            p.add_(0.5 * torch.randn_like(p))
    for mode, gamma in (("decoupled", "softmax"), ("naive", "gumbel")):
        net.zero_grad(set_to_none=True)
        value = relaxed_latency(lat, s, mode=mode, weights=(0.3, 0.4, 0.3), gamma=gamma, tau=1.0,
                                with_grad=True)
        assert value.item() > 0
        value.backward()
        for group in (s.alpha, s.beta, s.gamma):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in group), mode


def test_gumbel_frequencies_match_softmax():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0])
    n = 40000
    g = torch.Generator().manual_seed(1)
    y = gumbel_softmax_hard(logits.expand(n, 4).clone(), 1.0, generator=g)
    assert torch.all((y == 0) | (y == 1)) and torch.all(y.sum(-1) == 1)
    freq = y.mean(0)
    assert torch.allclose(freq, F.softmax(logits, -1), atol=0.015)


def test_gumbel_is_one_hot_with_straight_through_gradient():
    logits = torch.tensor([[0.2, -0.3, 0.7]], requires_grad=True)
    y = gumbel_softmax_hard(logits, 1.0)
    assert float(y.detach().max()) == 1.0 and float(y.detach().sum()) == 1.0
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_width_sampling_modes():
    s = sample_widths(SPACE, "min")
    assert all(i == 0 for row in s.index for i in row) and s.score == [None] * 3
    s = sample_widths(SPACE, "max")
    assert all(i == 1 for row in s.index for i in row)
    gamma = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(gamma_rows(4, j), 2)) for j in range(3))
    with torch.no_grad():
        gamma[0][0] = torch.tensor([5.0, -5.0])
    s = sample_widths(SPACE, "argmax", gamma)
    assert s.index[0][0] == 0
    s = sample_widths(SPACE, "gumbel", gamma)
    assert all(torch.allclose(sc, torch.ones_like(sc)) for sc in s.score)


def test_each_width_has_its_own_batchnorm(net):
    op = net.cells[1][0].keep.ops[1]  # conv at scale 8, layer 1
    bns = op.bn.bn
    before = [b.running_mean.clone() for b in bns]
    op.train()
    op(torch.randn(2, 8 * 8, 8, 16) + 3.0, 8 * 4)  # narrow width: 32 channels
    after = [b.running_mean for b in bns]
    widths = op.bn.widths
    changed = {w: not torch.equal(a, b) for w, a, b in zip(widths, before, after)}
    assert changed == {32: True, 64: False}


def test_teacher_and_student_share_cell_weights_but_not_stems(net):
    net.zero_grad(set_to_none=True)
    out = net(_x(), "teacher", "max")
    sum(v.mean() for v in out.values()).backward()
    cell_w = net.cells[2][1].keep.ops[3].conv1.weight
    assert cell_w.grad is not None and cell_w.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.stems["student"].parameters())
    assert all(p.grad is None for p in net.heads["student"].parameters())
    g_teacher = cell_w.grad.clone()
    net.zero_grad(set_to_none=True)
    out = net(_x(), "student", "max")
    sum(v.mean() for v in out.values()).backward()
    assert cell_w.grad is not None and not torch.equal(cell_w.grad, g_teacher)
    assert all(p.grad is None for p in net.stems["teacher"].parameters())
    # one module: changing it changes both architectures' predictions
    net.eval()
    x = _x()
    with torch.no_grad():
        t0, s0 = net(x, "teacher")["8"], net(x, "student", "max")["8"]
        saved = net.cells[1][0].keep.ops[1].conv.weight.clone()
        net.cells[1][0].keep.ops[1].conv.weight.mul_(3.0)
        t1, s1 = net(x, "teacher")["8"], net(x, "student", "max")["8"]
        net.cells[1][0].keep.ops[1].conv.weight.copy_(saved)
    net.train()
    assert not torch.allclose(t0, t1) and not torch.allclose(s0, s1)


def test_arch_params_dict_is_a_valid_contract_file(net, tmp_path):
    from fasterseg.arch.archparams import load_archparams, write_archparams

    d = net.arch_params_dict(epoch=0, stage="pretrain", branch_scores={}, lut=None,
                             latency_target_ms=8.3)
    write_archparams(tmp_path / "arch_params.json", d)
    back = load_archparams(tmp_path / "arch_params.json")
    assert back["teacher"]["gamma"] is None and back["student"]["beta"][0] is None
    assert back["student"]["alpha"][0][0] == pytest.approx([1e-3] * 5)


def test_official_heads_are_the_authors_five_without_fusion():
    space = SearchSpaceConfig(num_layers=3, ratios=[4, 8], teacher_stem_ratio=8, teacher_head_ratio=8)
    net = Supernet(space, 5, heads="official").train()
    assert net.combos == ["8", "16", "32", "8,32", "16,32"]
    assert all(len(h.fusions) == 0 for h in net.heads.values())
    out = net(torch.randn(2, 3, 64, 128), "student", "max")
    assert set(out) == set(net.combos) and out["8,32"].shape == (2, 5, 8, 16)
    paper = Supernet(space, 5)
    assert paper.combos == ["8", "16", "32", "8,16", "8,32", "16,32"]
    assert all(len(h.fusions) == 6 for h in paper.heads.values())
