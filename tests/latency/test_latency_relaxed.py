"""Relaxed latency (eq. 3): exact at one-hot parameters, equal to a path enumeration, smooth."""

import itertools

import pytest
import torch

from fasterseg.arch.schema import Arch
from fasterseg.latency.model import (
    OFFICIAL_WEIGHTS,
    PAPER_WEIGHTS,
    RelaxedLatency,
    latency_breakdown,
)
from fasterseg.latency.signature import Block, stem_blocks

D = torch.float64


def _params(space, gen, onehot=False, scale=1.0):
    """Normalised alpha, beta, gamma in the arch-parameter layout (softmax or one-hot rows)."""
    L, n, K, R = space.num_layers, len(space.rates), len(space.operators), len(space.ratios)

    def rows(r, c):
        x = torch.randn(r, c, generator=gen, dtype=D) * scale
        if onehot:
            return torch.nn.functional.one_hot(x.argmax(1), c).to(D)
        return x.softmax(1)

    alphas = [rows(L - j, K) for j in range(n)]
    betas = [rows(L - j - 1, 2) for j in range(1, n)]
    gammas = [rows(L - 1 if j == 0 else L - j, R) for j in range(n)]
    return alphas, betas, gammas


def _path_arch(space, alphas, betas, gammas, end, stem, head):
    """The single-path net that one-hot parameters select for the path ending at scale ``end``."""
    L = space.num_layers
    scales = [end]
    for l in range(L - 1, 0, -1):
        j = scales[-1]
        if j == 0:
            scales.append(0)
        elif l == j:
            scales.append(j - 1)
        else:
            scales.append(j - 1 if betas[j - 1][l - j - 1].argmax() == 0 else j)
    scales = scales[::-1]
    cells = []
    for l, j in enumerate(scales):
        j_next = scales[l + 1] if l + 1 < L else j
        if l == L - 1:
            ratio = head
        else:
            ratio = space.ratios[int(gammas[j_next][l - max(j_next - 1, 0)].argmax())]
        cells.append({"op": space.operators[int(alphas[j][l - j].argmax())], "rate": space.rates[j],
                      "stride": 2 if j_next > j else 1, "ratio": ratio})
    return Arch.from_dict({"schema": "fasterseg.arch/1", "name": f"path{end}", "num_classes": 19,
                           "stem_ratio": stem, "head_ratio": head,
                           "branches": [{"output_rate": space.rates[end], "cells": cells}]})


def test_one_hot_equals_discrete_cells(tiny_space, tiny_table):
    rl = RelaxedLatency(tiny_table, tiny_space)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        a, b, g = _params(tiny_space, gen, onehot=True)
        relaxed = rl.expected(a, b, g)
        total = 0.0
        for end in range(len(tiny_space.rates)):
            arch = _path_arch(tiny_space, a, b, g, end, rl.stem_ratio, rl.head_ratio)
            parts = latency_breakdown(arch, tiny_table)
            total += parts["cells"]
            stem = parts["stem"]
        assert float(relaxed) == pytest.approx(total + stem, rel=1e-12)


def _expected_op(table, space, size, op_probs, j, p_in, p_out, stride):
    """Brute-force E[latency] of one cell op over alpha and (in, out) widths."""
    h, w = size
    s = space.rates[j]
    mult = 2 if stride == 2 else 1
    out = 0.0
    for k, op in enumerate(space.operators):
        for a, pa in p_in.items():
            for c, pc in p_out.items():
                if pa * pc:
                    key = Block(op, h // s, w // s, s * a, mult * s * c, stride).key
                    out += float(op_probs[k]) * pa * pc * table[key]
    return out


def test_matches_path_enumeration_without_accumulation_bugs(tiny_space, tiny_table):
    """Unrolled recursion = sum over all supernet paths of P(path) * latency(path).

    The authors' accumulation (stale betas of another scale, totals updated in place within a
    layer) does not satisfy this identity for non-uniform parameters.
    """
    space, size = tiny_space, (64, 128)
    rl = RelaxedLatency(tiny_table, space, stem_ratio=4, head_ratio=8)
    gen = torch.Generator().manual_seed(1)
    alphas, betas, gammas = _params(space, gen, scale=2.0)
    L, n = space.num_layers, len(space.rates)

    def width(l, j):
        if l < 0:
            return {4: 1.0}
        if l == L - 1:
            return {8: 1.0}
        row = gammas[j][l - max(j - 1, 0)]
        return {r: float(p) for r, p in zip(space.ratios, row)}

    total = 0.0
    for end in range(n):
        for steps in itertools.product((0, 1), repeat=L - 1):
            scales = [0]
            for s in steps:
                scales.append(scales[-1] + s)
            if scales[-1] != end or any(j > min(l, n - 1) for l, j in enumerate(scales)):
                continue
            prob, lat = 1.0, 0.0
            for l, j in enumerate(scales):
                if l > 0 and j > 0 and l != j:
                    prob *= float(betas[j - 1][l - j - 1][0 if scales[l - 1] == j - 1 else 1])
                j_next = scales[l + 1] if l + 1 < L else j
                stride = 2 if j_next > j else 1
                lat += _expected_op(tiny_table, space, size, alphas[j][l - j], j, width(l - 1, j),
                                    width(l, j_next), stride)
            total += prob * lat
    stem = sum(tiny_table[b.key] for b in stem_blocks(4, size))
    assert float(rl.expected(alphas, betas, gammas)) == pytest.approx(total + stem, rel=1e-10)


def test_gradients_match_finite_differences(tiny_space, tiny_table):
    rl = RelaxedLatency(tiny_table, tiny_space)
    gen = torch.Generator().manual_seed(2)
    L, n, K, R = tiny_space.num_layers, 3, len(tiny_space.operators), len(tiny_space.ratios)
    raw = ([torch.randn(L - j, K, generator=gen, dtype=D) for j in range(n)]
           + [torch.randn(L - j - 1, 2, generator=gen, dtype=D) for j in range(1, n)]
           + [torch.randn(L - 1 if j == 0 else L - j, R, generator=gen, dtype=D) for j in range(n)])
    for t in raw:
        t.requires_grad_(True)

    def f(*xs):
        sm = [x.softmax(1) for x in xs]
        return rl(sm[:n], sm[n:2 * n - 1], sm[2 * n - 1:], weights=(0.3, 0.5, 0.2))

    assert torch.autograd.gradcheck(f, tuple(raw), eps=1e-6, atol=1e-6)


def test_decoupled_terms_and_modes(tiny_space, tiny_table):
    rl = RelaxedLatency(tiny_table, tiny_space)
    gen = torch.Generator().manual_seed(3)
    a, b, g = _params(tiny_space, gen, scale=3.0)
    for t in (*a, *b, *g):
        t.requires_grad_(True)
    terms = rl.terms(a, b, g)
    for w in (PAPER_WEIGHTS, OFFICIAL_WEIGHTS):
        want = w[0] * terms["op"] + w[1] * terms["rate"] + w[2] * terms["ratio"]
        got = float(rl(a, b, g, weights=w).detach())
        assert got == pytest.approx(float(want.detach()), rel=1e-12)
    naive = float(rl(a, b, g, mode="naive").detach())
    assert naive == pytest.approx(float(rl.expected(a, b, g).detach()), rel=1e-12)
    # Each decoupled term depends only on its own parameters.
    grads = torch.autograd.grad(terms["op"], [*a, *b, *g], allow_unused=True)
    assert all(gr is None or float(gr.abs().sum()) == 0 for gr in grads[len(a):])
    assert any(float(gr.abs().sum()) > 0 for gr in grads[: len(a)])
    grads = torch.autograd.grad(terms["rate"], [*a, *b, *g], allow_unused=True)
    others = (*grads[: len(a)], *grads[len(a) + len(b):])
    assert all(gr is None or float(gr.abs().sum()) == 0 for gr in others)
    grads = torch.autograd.grad(terms["ratio"], [*g], allow_unused=True)
    assert any(gr is not None and float(gr.abs().sum()) > 0 for gr in grads)


def test_teacher_without_gamma_uses_widest_ratio(tiny_space, tiny_table):
    rl = RelaxedLatency(tiny_table, tiny_space, stem_ratio=8, head_ratio=8)
    gen = torch.Generator().manual_seed(4)
    a, b, g = _params(tiny_space, gen)
    widest = [torch.zeros_like(x) for x in g]
    for x in widest:
        x[:, tiny_space.ratios.index(max(tiny_space.ratios))] = 1.0
    want = float(rl.expected(a, b, widest))
    assert float(rl.expected(a, b, None)) == pytest.approx(want, rel=1e-12)


def test_bad_shapes_are_rejected(tiny_space, tiny_table):
    rl = RelaxedLatency(tiny_table, tiny_space)
    a, b, g = _params(tiny_space, torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="alpha"):
        rl(a[:2], b, g)
    with pytest.raises(ValueError, match="beta"):
        rl(a, [b[0], b[0]], g)


def test_optional_decoder_is_a_constant(tiny_space, tiny_table):
    from fasterseg.latency.model import decoder_latency

    plain = RelaxedLatency(tiny_table, tiny_space)
    with_head = RelaxedLatency(tiny_table, tiny_space, head_rates=(16, 32))
    a, b, g = _params(tiny_space, torch.Generator().manual_seed(6))
    const = decoder_latency(tiny_table, 8, (16, 32), max(tiny_space.ratios), 19, (64, 128))
    assert const > 0
    diff = float(with_head.expected(a, b, g)) - float(plain.expected(a, b, g))
    assert diff == pytest.approx(const, rel=1e-9)
