"""Derivation rules on hand-set architecture parameters (paper 3.4 / appendix B)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fasterseg.arch.archparams import gamma_rows, make_archparams, validate_archparams
from fasterseg.arch.derive import (
    DEFAULT_MIN_SEG,
    DeriveRules,
    derive_from_params,
    derive_path,
    min_seg_fits,
    objective,
    remove_skips,
    segment_lengths,
    transition_layers,
)
from fasterseg.arch.schema import Arch
from fasterseg.config.search_space import OPERATORS, SearchSpaceConfig
from fasterseg.errors import UserError

HIGH = 4.0
OP = {name: i for i, name in enumerate(OPERATORS)}


def tiny_space(L: int = 8) -> SearchSpaceConfig:
    return SearchSpaceConfig(num_layers=L, ratios=[4, 8], teacher_stem_ratio=8,
                             teacher_head_ratio=8, student_stem_ratio=8, student_head_ratio=8)


def blank_role(space: SearchSpaceConfig, gamma: bool = True) -> dict:
    L, n = space.num_layers, len(space.rates)
    return {
        "alpha": [np.zeros((L - j, len(space.operators))) for j in range(n)],
        "beta": [None] + [np.zeros((L - j - 1, 2)) for j in range(1, n)],
        "gamma": [np.zeros((gamma_rows(L, j), len(space.ratios))) for j in range(n)]
        if gamma else None,
    }


def set_op(role: dict, layer: int, scale: int, op: str, value: float = HIGH) -> None:
    role["alpha"][scale][layer - scale, OP[op]] = value


def set_down(role: dict, first_layer: int, scale: int, value: float = HIGH) -> None:
    """Make ``first_layer`` the first cell at ``scale`` (its input comes from the down op)."""
    role["beta"][scale][first_layer - scale - 1, 0] = value


def set_ratio(role: dict, layer: int, scale: int, ratio_index: int) -> None:
    """Width of the scale-``scale`` feature output by ``layer``."""
    role["gamma"][scale][layer - max(scale - 1, 0), ratio_index] = HIGH


def all_ops(role: dict, space: SearchSpaceConfig, op: str) -> None:
    for j in range(len(space.rates)):
        for layer in range(j, space.num_layers):
            set_op(role, layer, j, op)


def params_for(space, student, teacher=None, scores=None) -> dict:
    return make_archparams(space, teacher, student, epoch=3, branch_scores=scores or {})


def flat(arch: Arch, branch: int = 0) -> list[tuple]:
    return [(c.op, c.rate, c.stride, c.ratio) for c in arch.branches[branch].cells]


def const_latency(table: dict[str, float]):
    """LAT from a dict keyed by the branch rates of the candidate."""
    return lambda arch: table[",".join(str(b.output_rate) for b in reversed(arch.branches))]


# ---------------------------------------------------------------------------------------------


def test_single_downsample_follows_the_supernet_wiring():
    space = tiny_space(8)
    role = blank_role(space)
    set_down(role, 5, 1)  # beta[1] row 3 <-> layer 5 (row r <-> layer r + j + 1)
    assert transition_layers(role["beta"], 1, 8) == (5,)
    path = derive_path(role["beta"], 1, 8)
    assert path == [0, 0, 0, 0, 0, 1, 1, 1]
    # cell (1, 1) has a single input and no beta: it can never be the chosen transition
    role["beta"][1][:, 0] = -HIGH
    assert transition_layers(role["beta"], 1, 8) != (1,)


def test_b1_branch_uses_scores_and_layer_before_transition_downsamples():
    space = tiny_space(8)
    role = blank_role(space)
    all_ops(role, space, "conv")
    set_down(role, 5, 1)
    scores = {"student": {"8": {"miou": 0.1}, "16": {"miou": 0.5}, "32": {"miou": 0.2}}}
    _, student, rep = derive_from_params(params_for(space, role, scores=scores), b=1,
                                         latency_fn=lambda a: 1.0, target_ms=1.0)
    assert [b.output_rate for b in student.branches] == [16]
    cells = flat(student)
    assert [c[2] for c in cells] == [1, 1, 1, 1, 2, 1, 1, 1]  # layer 4 downsamples into layer 5
    assert [c[1] for c in cells] == [8] * 5 + [16] * 3
    assert rep["student"]["branches"] == [16]


def test_two_downsamples_use_the_joint_probability():
    L = 8
    role = blank_role(tiny_space(L))
    # beta1 alone prefers layer 6, but beta2 only likes layer 5: the joint optimum is (3, 5)
    role["beta"][1][6 - 2, 0] = 3.0   # p0 ~ 0.95 at layer 6
    role["beta"][1][3 - 2, 0] = 1.5   # p0 ~ 0.82 at layer 3
    role["beta"][2][5 - 3, 0] = 3.0   # p0 ~ 0.95 at layer 5
    assert transition_layers(role["beta"], 2, L) == (3, 5)
    assert derive_path(role["beta"], 2, L) == [0, 0, 0, 1, 1, 2, 2, 2]
    # the single-downsample branch still takes beta1's own argmax
    assert transition_layers(role["beta"], 1, L) == (6,)


def test_uniform_betas_tie_break_to_the_earliest_positions():
    role = blank_role(tiny_space(6))
    assert transition_layers(role["beta"], 1, 6) == (2,)
    assert transition_layers(role["beta"], 2, 6) == (2, 3)
    assert transition_layers(role["beta"], 0, 6) == ()


def _probs(ops, skip_p):
    out = []
    for op, sp in zip(ops, skip_p):
        p = np.full(5, (1 - sp) / 4)
        p[0] = sp
        if op != 0:
            p[op] = max(p) + 0.1
        out.append(p / p.sum())
    return out


def test_skip_removal_min_len_keeps_the_least_likely_skips():
    ops = [1, 0, 0, 0, 0, 1]
    path = [0] * 6
    probs = _probs(ops, [0.1, 0.9, 0.5, 0.8, 0.6, 0.1])
    ratios = [4, 8, 4, 8, 4, 8]
    new_ops, new_path, new_ratios, info = remove_skips(ops, path, ratios, probs, 0, min_len=4)
    assert info["removed"] == [1, 3]  # the two most likely skips go (6 - 4 = 2)
    assert sorted(info["replaced_min_len"]) == [2, 4]
    assert len(new_ops) == 4 and 0 not in new_ops
    assert new_ratios == [4, 4, 4, 8]  # removed cells take their output widths along
    assert new_path == [0] * 4


def test_skip_removal_segment_rule_and_down_position():
    # path: 1/8 x3 (cell 2 downsamples, and is a skip), 1/16 x3 all skips
    ops = [1, 1, 0, 0, 0, 0]
    path = [0, 0, 0, 1, 1, 1]
    probs = _probs(ops, [0.1, 0.1, 0.9, 0.7, 0.5, 0.6])
    ratios = [4, 4, 8, 4, 4, 8]
    new_ops, new_path, new_ratios, info = remove_skips(ops, path, ratios, probs, 0, min_len=1)
    assert info["replaced_down"] == [2]  # a skip that downsamples is replaced, never removed
    assert info["replaced_segment"] == [4]  # the least likely skip of the all-skip 1/16 run stays
    assert info["removed"] == [3, 5]
    assert new_path == [0, 0, 0, 1]
    assert 0 not in new_ops and new_ops[2] != 0
    # the last cell was removed: the new last cell outputs the head ratio (last entry)
    assert new_ratios == [4, 4, 8, 8]


def test_student_derivation_removes_skips_and_sets_widths():
    space = tiny_space(8)
    role = blank_role(space)
    all_ops(role, space, "conv_x2")
    set_down(role, 4, 1)
    for layer in (1, 5):  # stride-1 skips: removed
        set_op(role, layer, 0 if layer < 4 else 1, "skip", 2 * HIGH)
    set_op(role, 3, 0, "skip", 2 * HIGH)  # layer 3 downsamples: replaced by the next best op
    role["alpha"][0][3, OP["zoomed_conv"]] = 1.5 * HIGH
    set_ratio(role, 2, 0, 1)  # output of layer 2 at 1/8 -> chi 8
    scores = {"student": {"16": {"miou": 1.0}}}
    _, student, rep = derive_from_params(params_for(space, role, scores=scores), b=1,
                                         latency_fn=lambda a: 1.0, target_ms=1.0,
                                         rules=DeriveRules(min_len=2))
    cells = flat(student)
    assert len(cells) == 6
    assert [c[0] for c in cells] == ["conv_x2"] * 2 + ["zoomed_conv"] + ["conv_x2"] * 3
    assert [c[2] for c in cells] == [1, 1, 2, 1, 1, 1]
    assert cells[1][3] == 8 and cells[0][3] == 4
    assert cells[-1][3] == space.student_head_ratio
    assert student.provenance["role"] == "student" and student.provenance["epoch"] == 3
    assert rep["student"]["paths"]["16"]["removed"] == [1, 5]


def test_teacher_never_uses_skips_and_is_full_width():
    space = tiny_space(6)
    teacher, student = blank_role(space, gamma=False), blank_role(space)
    all_ops(teacher, space, "skip")  # skip is the argmax everywhere
    for j in range(3):
        teacher["alpha"][j][:, OP["zoomed_conv"]] = 1.0
    all_ops(student, space, "conv")
    scores = {r: {"8,16": {"miou": 0.3}, "8,32": {"miou": 0.2}, "16,32": {"miou": 0.1}}
              for r in ("teacher", "student")}
    t, s, _ = derive_from_params(params_for(space, student, teacher, scores),
                                 latency_fn=lambda a: 1.0, target_ms=1.0)
    assert t.stem_ratio == space.teacher_stem_ratio and t.head_ratio == space.teacher_head_ratio
    for b in t.branches:
        assert len(b.cells) == space.num_layers
        assert {c.op for c in b.cells} == {"zoomed_conv"}
        assert {c.ratio for c in b.cells} == {max(space.ratios)}
    assert [b.output_rate for b in t.branches] == [16, 8]


def test_branch_choice_by_objective_and_sharing():
    space = tiny_space(7)
    role = blank_role(space)
    all_ops(role, space, "conv")
    set_down(role, 4, 1)
    set_down(role, 5, 2)
    scores = {"student": {"8,16": {"miou": 0.50}, "8,32": {"miou": 0.52}, "16,32": {"miou": 0.40}}}
    params = params_for(space, role, scores=scores)
    # 8,32 is more accurate but much slower: the objective must decide, not mIoU alone
    lat = {"8,16": 5.0, "8,32": 9.0, "16,32": 3.0}
    _, s, rep = derive_from_params(params, latency_fn=const_latency(lat), target_ms=6.0)
    expect = max(lat, key=lambda k: scores["student"][k]["miou"] * (lat[k] / 6.0) ** -0.07)
    assert ",".join(str(r) for r in sorted(b.output_rate for b in s.branches)) == expect == "8,16"
    objs = {r["key"]: r["objective"] for r in rep["student"]["candidates"]}
    assert math.isclose(objs["8,32"], 0.52 * (9.0 / 6.0) ** -0.07)
    # cheaper 8,32 flips the choice
    lat2 = dict(lat, **{"8,32": 4.0})
    _, s2, _ = derive_from_params(params, latency_fn=const_latency(lat2), target_ms=6.0)
    assert sorted(b.output_rate for b in s2.branches) == [8, 32]
    # branches are emitted in full, ordered by descending rate; identical leading cells are shared
    assert [b.output_rate for b in s2.branches] == [32, 8]
    # layers 0-2 identical; layer 3 downsamples only in the 1/32 branch
    assert s2.shared_prefix() == 3
    assert s2.branches[0].cells[3].stride == 2 and s2.branches[1].cells[3].stride == 1


def test_objective_matches_mnasnet_formula():
    assert math.isclose(objective(0.7, 8.3, 8.3), 0.7)
    assert objective(0.7, 4.0, 8.3) > 0.7 > objective(0.7, 16.0, 8.3)
    r = DeriveRules(w_below=0.0, w_above=-1.0)
    assert math.isclose(objective(0.5, 4.0, 8.0, r), 0.5)
    assert math.isclose(objective(0.5, 16.0, 8.0, r), 0.25)


def test_missing_scores_and_bad_branches():
    space = tiny_space(6)
    role = blank_role(space)
    all_ops(role, space, "conv")
    with pytest.raises(UserError, match="branch_scores"):
        derive_from_params(params_for(space, role), latency_fn=lambda a: 1.0, target_ms=1.0)
    with pytest.raises(UserError, match="branches"):
        derive_from_params(params_for(space, role), b=4, latency_fn=lambda a: 1.0, target_ms=1.0)
    # combinations without a score are skipped, not fatal
    scores = {"student": {"16,32": {"miou": 0.1}}}
    _, s, rep = derive_from_params(params_for(space, role, scores=scores), latency_fn=lambda a: 1.0,
                                   target_ms=1.0)
    assert sorted(b.output_rate for b in s.branches) == [16, 32]
    assert any("no supernet score" in r.get("note", "") for r in rep["student"]["candidates"])


def test_latency_table_and_scaled_target():
    from fasterseg.arch.derive import PUBLISHED_STUDENT_MS, published_student
    from fasterseg.latency.signature import arch_blocks
    from fasterseg.latency.table import LatencyTable

    space = tiny_space(6)
    role = blank_role(space)
    all_ops(role, space, "conv")
    scores = {"student": {"8,16": {"miou": 0.3}, "8,32": {"miou": 0.3}, "16,32": {"miou": 0.3}}}
    params = params_for(space, role, scores=scores)
    size = (64, 128)
    # a synthetic table: every block costs its MACs in "ms" / 1e6
    entries = {}
    archs = [published_student()]
    for rates in ((16, 8), (32, 8), (32, 16)):
        archs.append(Arch("c", 19, 8, 8, tuple(b for r in rates for b in _branch_for(params, r))))
    for a in archs:
        for _, blk in arch_blocks(a, size):
            entries[blk.key] = blk.macs / 1e6
    table = LatencyTable(entries, {"input_size": list(size), "num_classes": 19})
    _, s, rep = derive_from_params(params, lut=table)
    ref = sum(blk.macs / 1e6 for _, blk in arch_blocks(published_student(), size))
    assert rep["latency"]["kind"] == "lut"
    assert math.isclose(rep["latency"]["target"], 8.3 * ref / PUBLISHED_STUDENT_MS, rel_tol=1e-9)
    expected = sum(blk.macs / 1e6 for _, blk in arch_blocks(s, size))
    assert math.isclose(rep["student"]["latency"], expected, rel_tol=1e-9)
    assert s.provenance["latency"]["value"] == rep["student"]["latency"]


def _branch_for(params, rate):
    """Derive the single branch ending at ``rate`` (b=1 with only that combo scored)."""
    p = dict(params, branch_scores={"student": {str(rate): {"miou": 1.0}}})
    _, s, _ = derive_from_params(p, b=1, latency_fn=lambda a: 1.0, target_ms=1.0)
    return s.branches


def test_mac_proxy_without_table():
    space = tiny_space(6)
    role = blank_role(space)
    all_ops(role, space, "conv")
    scores = {"student": {"8,16": {"miou": 0.3}, "8,32": {"miou": 0.3}, "16,32": {"miou": 0.3}}}
    _, s, rep = derive_from_params(params_for(space, role, scores=scores))
    assert rep["latency"]["kind"] == "mac_proxy"
    lats = {r["key"]: r["latency"] for r in rep["student"]["candidates"]}
    assert all(v > 0 for v in lats.values())
    # equal accuracy: the cheapest candidate (fewest MACs) wins
    chosen = ",".join(str(r) for r in sorted(b.output_rate for b in s.branches))
    assert lats[chosen] == min(lats.values())


def test_archparams_validation_names_the_field():
    space = tiny_space(6)
    role = blank_role(space)
    params = params_for(space, role)
    bad = dict(params, student=dict(params["student"], alpha=params["student"]["alpha"][:2]))
    with pytest.raises(UserError, match="student.alpha"):
        validate_archparams(bad)
    bad_row = dict(params)
    bad_row["student"] = dict(params["student"])
    beta = params["student"]["beta"]
    bad_row["student"]["beta"] = [None, beta[1][:-1], beta[2]]
    with pytest.raises(UserError, match=r"student.beta\[1\]"):
        validate_archparams(bad_row)
    with pytest.raises(UserError, match="schema"):
        validate_archparams(dict(params, schema="nope"))


def test_table_missing_a_role_falls_back_to_the_mac_proxy():
    from fasterseg.latency.table import LatencyTable

    space = tiny_space(6)
    role = blank_role(space)
    all_ops(role, space, "conv")
    scores = {"student": {"8,16": {"miou": 0.3}, "8,32": {"miou": 0.3}, "16,32": {"miou": 0.3}}}
    empty = LatencyTable({}, {"input_size": [64, 128], "num_classes": 19})
    _, s, rep = derive_from_params(params_for(space, role, scores=scores), lut=empty, target_ms=5.0)
    assert any("MAC proxy" in w for w in rep["warnings"])
    assert s is not None and rep["student"]["latency"] is None


# ---------------------------------------------------------------------------------------------
# Minimum segment lengths (issue 11, item 1).


def _degenerate_32_betas(L: int = 16) -> dict:
    """beta1 prefers layer 7 and beta2 layer 8: without minimums, 1 cell at 1/16."""
    role = blank_role(SearchSpaceConfig(num_layers=L))
    set_down(role, 7, 1, 4.0)  # p0 ~ 0.98
    set_down(role, 4, 1, 2.0)  # p0 ~ 0.88
    set_down(role, 8, 2, 4.0)  # p0 ~ 0.98
    set_down(role, 10, 2, 2.5)  # p0 ~ 0.92
    return role


def test_min_seg_bounds_the_downsample_positions():
    role = _degenerate_32_betas()
    assert transition_layers(role["beta"], 2, 16) == (7, 8)  # 7 cells at 1/8, 1 at 1/16, 8 at 1/32
    # >= 3 cells at 1/8, >= 3 at 1/16, >= 2 at 1/32: the best allowed pair is (7, 10)
    assert transition_layers(role["beta"], 2, 16, (3, 3, 2)) == (7, 10)
    path = derive_path(role["beta"], 2, 16, (3, 3, 2))
    assert segment_lengths(path, 2) == [7, 3, 6]
    # the 1/32 segment minimum: beta2's favourite last layer is out of reach with >= 2 at 1/32
    role["beta"][2][:, 0] = 0.0
    set_down(role, 15, 2, 6.0)
    set_down(role, 14, 2, 1.0)
    assert transition_layers(role["beta"], 2, 16) == (7, 15)
    assert transition_layers(role["beta"], 2, 16, (3, 3, 2)) == (7, 14)
    with pytest.raises(UserError, match="numbers"):
        transition_layers(role["beta"], 2, 16, (3, 3))


def test_min_seg_fits():
    assert min_seg_fits((3, 3, 2), 8) and not min_seg_fits((3, 3, 2), 7)
    assert min_seg_fits((2, 3), 5) and not min_seg_fits((2, 3), 4)
    assert not min_seg_fits((0, 1, 1), 3)  # cell (1, 1) has no beta: the earliest 1/16 layer is 2
    assert min_seg_fits((0, 1, 1), 4)


def test_skip_removal_keeps_the_minimum_cells_per_rate():
    # 1/8: cells 0-3 (cell 3 downsamples), 1/16: cells 4-7, three of them likely skips
    ops = [1, 1, 1, 1, 0, 0, 0, 1]
    path = [0] * 4 + [1] * 4
    probs = _probs(ops, [0.1, 0.1, 0.1, 0.1, 0.9, 0.8, 0.7, 0.1])
    ratios = [4] * 7 + [8]
    _, new_path, _, info = remove_skips(ops, path, ratios, probs, 0, min_len=1)
    assert info["removed"] == [4, 5, 6] and new_path == [0] * 4 + [1]
    _, new_path, _, info = remove_skips(ops, path, ratios, probs, 0, min_len=1, min_seg=(3, 3))
    assert info["removed"] == [4]  # the most likely skip goes; two more would leave < 3 cells
    assert info["replaced_min_seg"] == [5, 6]
    assert new_path == [0] * 4 + [1] * 3


def _skippy_student(L: int = 16) -> dict:
    """Skip is the favourite op everywhere, beta wants a 1-cell 1/16 segment."""
    space = SearchSpaceConfig(num_layers=L)
    role = _degenerate_32_betas(L)
    all_ops(role, space, "conv_x2")
    for j in range(3):
        role["alpha"][j][:, OP["skip"]] = 2 * HIGH
    role["gamma"] = blank_role(space)["gamma"]
    return role


def test_default_rules_keep_the_minimum_segments_and_record_them():
    space = SearchSpaceConfig()
    scores = {"student": {"8,32": {"miou": 0.1}, "16,32": {"miou": 0.9}}}
    params = params_for(space, _skippy_student(), scores=scores)
    assert DeriveRules().min_seg == DEFAULT_MIN_SEG == ((2, 3), (3, 3, 2))
    _, s, rep = derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=1.0)
    b32, b16 = s.branches
    assert (b32.output_rate, b16.output_rate) == (32, 16)
    for branch, mins in ((b32, (3, 3, 2)), (b16, (2, 3))):
        per_rate = [sum(1 for c in branch.cells if c.rate == r) for r in (8, 16, 32)]
        assert all(n >= m for n, m in zip(per_rate, mins)), (per_rate, mins)
    assert rep["student"]["paths"]["32"]["min_seg"] == [3, 3, 2]
    assert rep["student"]["paths"]["32"]["segments"] >= [3, 3, 2]
    assert s.provenance["rules"]["min_seg"] == [[2, 3], [3, 3, 2]]
    loaded = Arch.from_dict(json.loads(json.dumps(s.to_dict())))  # JSON-safe provenance
    assert loaded.provenance["rules"]["min_seg"] == [[2, 3], [3, 3, 2]]
    # the rule off: the 1/16 segment of the 1/32 branch shrinks to one (downsampling) cell
    _, off, rep_off = derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=1.0,
                                         rules=DeriveRules(min_seg=()))
    assert [sum(1 for c in off.branches[0].cells if c.rate == 16)] == [1]
    assert rep_off["student"]["paths"]["32"]["min_seg"] is None
    assert off.provenance["rules"]["min_seg"] == []


def test_min_seg_that_does_not_fit_is_not_applied_and_said():
    space = tiny_space(6)  # 3 + 3 + 2 > 6 layers
    role = blank_role(space)
    all_ops(role, space, "conv")
    scores = {"student": {"16,32": {"miou": 0.5}, "8,32": {"miou": 0.1}, "8,16": {"miou": 0.1}}}
    _, s, rep = derive_from_params(params_for(space, role, scores=scores),
                                   latency_fn=lambda a: 1.0, target_ms=1.0)
    assert "do not fit in 6 layers" in rep["student"]["paths"]["32"]["min_seg_note"]
    assert rep["student"]["paths"]["32"]["min_seg"] is None
    assert rep["student"]["paths"]["16"]["min_seg"] == [2, 3]  # 2 + 3 <= 6: applied


def test_min_seg_validation():
    space = tiny_space(8)
    role = blank_role(space)
    params = params_for(space, role, scores={"student": {"16,32": {"miou": 0.5}}})
    for bad in (((3,),), ((2, -1),), ((2, 3), (1, 4))):
        with pytest.raises(UserError, match="min_seg"):
            derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=1.0,
                               rules=DeriveRules(min_seg=bad))


def test_cli_min_seg_parsing():
    from fasterseg.cli.derive import parse_min_seg

    assert parse_min_seg(None) == DEFAULT_MIN_SEG
    assert parse_min_seg(["0"]) == ()
    assert parse_min_seg(["4,3,2"]) == ((2, 3), (4, 3, 2))
    assert parse_min_seg(["3,4", "3,3,3"]) == ((3, 4), (3, 3, 3))
    for bad in (["3"], ["a,b"], ["2,-1"], ["2,3", "3,3"], ["0", "2,3"]):
        with pytest.raises(UserError, match="--min-seg"):
            parse_min_seg(bad)


def test_cli_min_seg_reaches_the_provenance(tmp_path, capsys):
    from fasterseg.arch.archparams import write_archparams
    from fasterseg.arch.schema import load_arch
    from fasterseg.cli.main import main

    space = tiny_space(8)
    role = blank_role(space)
    all_ops(role, space, "conv")
    scores = {"student": {"16,32": {"miou": 0.5}, "8,32": {"miou": 0.1}, "8,16": {"miou": 0.1}}}
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", params_for(space, role, scores=scores))
    assert main(["derive", str(run), "--no-diagram", "--target-ms", "1"]) == 0
    out = capsys.readouterr().out
    assert "minimum cells per rate: 2,3 (1/16 branch); 3,3,2 (1/32 branch)" in out
    prov = load_arch(run / "student.json").provenance
    assert prov["rules"]["min_seg"] == [[2, 3], [3, 3, 2]]
    other = tmp_path / "o"
    assert main(["derive", str(run), "--no-diagram", "--min-seg", "0", "-o", str(other)]) == 0
    assert "minimum cells per rate: off" in capsys.readouterr().out
    assert load_arch(other / "student.json").provenance["rules"]["min_seg"] == []
    assert main(["derive", str(run), "--no-diagram", "--min-seg", "3"]) == 1
    assert main(["derive", str(run), "--no-diagram", "--min-seg", "3,3,2,1"]) == 1  # 3 rates
    assert main(["derive", str(run), "--compat", "official", "--min-seg", "3,3,2"]) == 1
