"""``compat="official"`` equals the authors' derivation for ANY architecture parameters.

The oracle below is a plain re-statement of the authors' derivation, written from the prose of
``official_fasterseg_facts.md`` section 7 and the two clarifications of issue 11. It imports
nothing from ``fasterseg.arch`` on purpose: it is a second, independent reading of the rules,
and the property test compares it with the shipped code over random parameter sets.

What the oracle states (L = 16 layers, scales 0/1/2 = 1/8, 1/16, 1/32; op 0 = skip):

1. Three calls, for the branch ending at scale 0, 1, 2, on the same tensors. Each call first
   softmaxes the betas again, in place (call 1 sees softmax, call 2 softmax^2, call 3 softmax^3).
2. Path. last 0: all layers at 1/8. last 1: the row k in 1..L-4 (first and last rows excluded)
   with the largest beta1[k][0]; layer k downsamples. last 2: the pair (i, j), j in 0..L-5,
   i in 1..j-2, with the largest beta1[i][0] * beta2[j][0]; layers i+1 and j+2 downsample.
3. Widths: for layer l = 1..L-1 at scale s, the width entering layer l is the argmax of
   ratio_0[l-1] if s == 0 else ratio_s[l-s] (the teacher: always the widest).
4. Ops: argmax of the raw alpha row alpha[s][l-s] (the teacher's skip logit is set to -inf on
   its path first). Then, in this order:
   a. the skip candidates are the positions whose argmax is skip and that do not downsample,
      each with its skip probability; the at most L - min_len most probable are the ones that
      will be removed (min_len = round(L/3) + 2*last). This list and its budget are fixed HERE,
      before step b (issue 11, cause b: a position fixed by step b still uses up a slot);
   b. for every segment that STARTS AFTER A DOWNSAMPLE (from one downsample position to the next,
      or to the end), if every position in it is a skip candidate, the least probable skip gets
      -inf. The segment before the first downsample and the 1/8-only branch are never checked
      (issue 11, cause a);
   c. every position whose argmax is still skip is removed if it is in the list of step a
      (with its output width; removing the last position drops the last remaining width), and
      otherwise its skip logit gets -inf and it takes the next-best op.
   All -inf writes stay in the alphas, so later calls see them.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fasterseg.arch.official import compat_branches, derive_compat
from fasterseg.config.search_space import SearchSpaceConfig

L = 16
NUM_OPS = 5
NUM_WIDTHS = 5
NEG_INF = -math.inf


# ------------------------------------------------------------------------------ the oracle


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _skip_probs(rows: list[list[float]]) -> list[float]:
    """Softmax probability of op 0 in every row, in float32 like the authors' tensors."""
    return torch.softmax(torch.tensor(rows, dtype=torch.float32), dim=-1)[:, 0].tolist()


def _oracle_path(beta1: list[list[float]], beta2: list[list[float]], last: int) -> list[int]:
    down_at: list[int] = []
    if last == 1:
        rows = list(range(1, L - 3))
        best = rows[0]
        for k in rows:
            if beta1[k][0] > beta1[best][0]:
                best = k
        down_at = [best]
    elif last == 2:
        best_v, best_ij = -1.0, None
        for j in range(0, L - 4):
            for i in range(1, j - 1):
                v = float(np.float32(beta1[i][0]) * np.float32(beta2[j][0]))  # float32 product
                if v > best_v:
                    best_v, best_ij = v, (i, j)
        i, j = best_ij
        down_at = [i + 1, j + 2]
    path, scale = [], 0
    for layer in range(L):
        path.append(scale)
        if layer in down_at:
            scale += 1
    return path


def _oracle_widths(ratios: list | None, path: list[int]) -> list[int]:
    widths = []
    for layer in range(1, L):
        s = path[layer]
        if ratios is None:
            widths.append(NUM_WIDTHS - 1)
        elif s == 0:
            widths.append(_argmax(ratios[0][layer - 1]))
        else:
            widths.append(_argmax(ratios[s][layer - s]))
    return widths


def _oracle_ops(alphas: list, path: list[int], widths: list[int], teacher: bool, last: int):
    def row(layer: int) -> list[float]:
        return alphas[path[layer]][layer - path[layer]]  # a mutable list: writes persist

    if teacher:
        for layer in range(L):
            row(layer)[0] = NEG_INF
    downs = [layer for layer in range(L - 1) if path[layer + 1] > path[layer]]
    # the skip probability of every row before any fix (step b needs only rows it has not fixed)
    p_skip = _skip_probs([row(layer) for layer in range(L)])

    # a. candidates and the removal list, before any fix
    candidates = [(layer, p_skip[layer]) for layer in range(L)
                  if _argmax(row(layer)) == 0 and layer not in downs]
    min_len = round(L / 3) + 2 * last
    ranked = sorted(candidates, key=lambda c: c[1], reverse=True)
    to_remove = {layer for layer, _ in ranked[: L - min_len]}
    candidate_layers = {layer for layer, _ in candidates}

    # b. "all skips" fix, only for segments that start after a downsample
    ends = downs + [L]
    for start, end in zip(downs, ends[1:]):
        segment = list(range(start + 1, end))
        if segment and all(layer in candidate_layers for layer in segment):
            weakest = segment[0]
            for layer in segment:
                if p_skip[layer] < p_skip[weakest]:
                    weakest = layer
            row(weakest)[0] = NEG_INF

    # c. remove or replace what is still a skip
    ops, new_path, new_widths = [], [], []
    for layer in range(L):
        if _argmax(row(layer)) == 0:
            if layer in to_remove:
                if layer == L - 1:
                    new_widths.pop()
                continue
            row(layer)[0] = NEG_INF
        ops.append(_argmax(row(layer)))
        new_path.append(path[layer])
        if layer < L - 1:
            new_widths.append(widths[layer])
    return ops, new_path, new_widths


def _softmax_rows(rows: list[list[float]]) -> list[list[float]]:
    return torch.softmax(torch.tensor(rows, dtype=torch.float32), dim=-1).tolist()


def oracle(raw: dict, teacher: bool) -> dict[int, tuple[list[int], list[int], list[int]]]:
    """``{last: (ops, path, width indices)}`` of the authors' three derivation calls."""
    alphas = [raw["alpha"][j].tolist() for j in range(3)]
    beta1, beta2 = raw["beta"][1].tolist(), raw["beta"][2].tolist()
    ratios = None if teacher else [raw["gamma"][j].tolist() for j in range(3)]
    out = {}
    for last in range(3):
        beta1, beta2 = _softmax_rows(beta1), _softmax_rows(beta2)
        path = _oracle_path(beta1, beta2, last)
        widths = _oracle_widths(ratios, path)
        out[last] = _oracle_ops(alphas, path, widths, teacher, last)
    return out


# ------------------------------------------------------------------------------ random inputs


def random_params(rng: random.Random) -> dict:
    """Raw logits in the authors' shapes, skewed so that skips, all-skip segments and strong
    downsample preferences all occur often."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    skip_bias = rng.choice([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    beta_scale = rng.choice([0.3, 1.0, 3.0, 10.0])

    def normal(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * scale

    alpha = []
    for j in range(3):
        a = normal(L - j, NUM_OPS)
        a[:, 0] += skip_bias + normal(L - j, scale=rng.choice([0.0, 1.0]))
        alpha.append(a)
    beta = [None, normal(L - 2, 2, scale=beta_scale), normal(L - 3, 2, scale=beta_scale)]
    gamma = [normal(L - 1, NUM_WIDTHS), normal(L - 1, NUM_WIDTHS), normal(L - 2, NUM_WIDTHS)]
    return {"alpha": alpha, "beta": beta, "gamma": gamma}


def _shipped(raw: dict, role: str) -> dict:
    gamma = None if role == "teacher" else raw["gamma"]
    return compat_branches(raw["alpha"], raw["beta"], gamma, SearchSpaceConfig(), role)


N_SETS = 500  # student parameter sets; every 5th set is also derived as a teacher


def test_compat_equals_the_oracle_on_random_parameters():
    rng = random.Random(20200426)
    differences, branches = [], 0
    for n in range(N_SETS):
        raw = random_params(rng)
        for role in ("student", "teacher") if n % 5 == 0 else ("student",):
            want = oracle(raw, role == "teacher")
            got = _shipped(raw, role)
            for last in range(3):
                branches += 1
                g = tuple(list(x) for x in got[last])
                if g != want[last]:
                    differences.append((n, role, last, g, want[last]))
    assert branches == (N_SETS + N_SETS // 5) * 3
    assert differences == [], (
        f"{len(differences)} of {branches} branches differ, first: {differences[0]}"
    )


def test_compat_arch_cells_follow_the_oracle():
    """The whole compat derivation (branch choice, cells, ratios) on a sample of random sets."""
    space = SearchSpaceConfig()
    rng = random.Random(7)
    for _ in range(100):
        raw = random_params(rng)
        m02, m12 = rng.random(), rng.random()
        scores = {"8,32": {"miou": m02, "latency_ms": 5 + 3 * rng.random()},
                  "16,32": {"miou": m12, "latency_ms": 5 + 3 * rng.random()}}
        arch, rep = derive_compat(raw, "student", scores, space)
        want = oracle(raw, teacher=False)
        obj = {k: v["miou"] * (v["latency_ms"] / 8.3) ** -0.07 for k, v in scores.items()}
        lasts = (2, 0) if obj["8,32"] > obj["16,32"] else (2, 1)
        assert [b.output_rate for b in arch.branches] == [space.rates[s] for s in lasts]
        for branch, last in zip(arch.branches, lasts):
            ops, path, widths = want[last]
            cells = [(c.op, c.rate, c.stride, c.ratio) for c in branch.cells]
            expect = []
            for i, (op, s) in enumerate(zip(ops, path)):
                stride = 2 if i < len(path) - 1 and path[i + 1] > s else 1
                ratio = space.student_head_ratio if i == len(ops) - 1 else space.ratios[widths[i]]
                expect.append((space.operators[op], space.rates[s], stride, ratio))
            assert cells == expect


@pytest.mark.parametrize("seed", range(3))
def test_oracle_leaves_the_inputs_alone(seed):
    raw = random_params(random.Random(seed))
    before = {k: [None if t is None else t.clone() for t in v] for k, v in raw.items()}
    oracle(raw, teacher=False)
    _shipped(raw, "student")
    for k, v in raw.items():
        for a, b in zip(v, before[k]):
            assert (a is None and b is None) or torch.equal(a, b)


# ------------------------------------------------------------------------------ the oracle itself

# the shared folder: ../shared next to the checkout, or FASTERSEG_SHARED
SHARED = Path(os.environ.get("FASTERSEG_SHARED") or Path(__file__).resolve().parents[3] / "shared")
OFFICIAL = SHARED / "reference" / "official_arch"

# facts section 13: (ops, path, width indices into 4,6,8,10,12) of the three calls
PUBLISHED = {
    "arch_1.pt": {
        2: ([3, 3, 4, 2, 4, 4, 4, 4, 4, 4], [0] * 4 + [1] * 4 + [2] * 2, [0, 0, 0, 2] + [0] * 5),
        1: ([3, 3, 4, 4, 3, 3, 4, 4, 4], [0] * 6 + [1] * 3, [0] * 7 + [4]),
        0: ([3, 3, 4, 4, 3, 3, 4, 3, 4], [0] * 9, [0] * 7 + [4]),
    },
    "arch_0.pt": {
        2: ([2, 4, 4, 4, 4, 4, 4, 2, 4, 4, 4, 4, 4, 4, 3, 3], [0] * 6 + [1] * 8 + [2] * 2,
            [4] * 15),
        1: ([2, 4, 4, 4, 4, 3, 4, 2, 4, 4, 4, 4, 4, 4, 4, 4], [0] * 5 + [1] * 11, [4] * 15),
        0: ([2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 4, 3, 3], [0] * 16, [4] * 15),
    },
}


@pytest.mark.parametrize("fname", sorted(PUBLISHED))
def test_oracle_gives_the_published_nets(fname):
    """The oracle is checked against the authors' published result, not only against our code."""
    from fasterseg.arch.official import load_official  # the file reader, not the derivation

    path = OFFICIAL / fname
    if not path.is_file():
        pytest.skip("official arch files not available")
    raw = load_official(path)
    k = 0 if fname == "arch_0.pt" else 1
    params = {
        "alpha": [raw[f"alpha_{k}_{j}"] for j in range(3)],
        "beta": [None, raw[f"beta_{k}_1"], raw[f"beta_{k}_2"]],
        "gamma": [raw[f"ratio_{k}_{j}"] for j in range(3)],
    }
    got = oracle(params, teacher=k == 0)
    for last, want in PUBLISHED[fname].items():
        assert got[last] == want, last
