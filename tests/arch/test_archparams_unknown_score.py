"""A branch mIoU the search could not measure (NaN, written as null) stays readable and derivable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fasterseg.arch.archparams import (
    gamma_rows,
    load_archparams,
    make_archparams,
    validate_archparams,
    write_archparams,
)
from fasterseg.arch.derive import derive_from_params
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError


def _space() -> SearchSpaceConfig:
    return SearchSpaceConfig(num_layers=7, ratios=[4, 8], teacher_stem_ratio=8,
                             teacher_head_ratio=8, student_stem_ratio=8, student_head_ratio=8)


def _role(space: SearchSpaceConfig) -> dict:
    L, n = space.num_layers, len(space.rates)
    return {"alpha": [np.zeros((L - j, len(space.operators))) for j in range(n)],
            "beta": [None] + [np.zeros((L - j - 1, 2)) for j in range(1, n)],
            "gamma": [np.zeros((gamma_rows(L, j), len(space.ratios))) for j in range(n)]}


def test_nan_branch_score_round_trips_as_null_and_derive_skips_it(tmp_path):
    space = _space()
    scores = {"student": {"8,16": {"miou": float("nan")}, "8,32": {"miou": 0.3},
                          "16,32": {"miou": 0.2}}}
    params = make_archparams(space, None, _role(space), epoch=1, branch_scores=scores)
    path = write_archparams(tmp_path / "arch_params.json", params)
    assert json.loads(path.read_text())["branch_scores"]["student"]["8,16"]["miou"] is None
    loaded = load_archparams(path)  # was: "miou must be a number"
    lat = {(16, 8): 1.0, (32, 8): 5.0, (32, 16): 4.0}
    _, student, rep = derive_from_params(
        loaded, latency_fn=lambda a: lat[tuple(b.output_rate for b in a.branches)], target_ms=5.0)
    rows = {r["key"]: r for r in rep["student"]["candidates"]}
    # the unknown (and fastest) combination is not chosen, and the report says why
    assert "objective" not in rows["8,16"] and "no supernet score" in rows["8,16"]["note"]
    assert sorted(b.output_rate for b in student.branches) == [8, 32]
    assert student.provenance["branch_scores"]["8,16"] is None
    # an in-memory NaN (derive straight from a search result) is unknown as well
    _, s2, _ = derive_from_params(
        params, latency_fn=lambda a: lat[tuple(b.output_rate for b in a.branches)], target_ms=5.0)
    assert sorted(b.output_rate for b in s2.branches) == [8, 32]


def test_every_score_unknown_is_one_clear_error(tmp_path):
    space = _space()
    nan = {"miou": None}
    params = make_archparams(space, None, _role(space), branch_scores={
        "student": {"8,16": nan, "8,32": nan, "16,32": nan}})
    with pytest.raises(UserError, match="no branch combination has a supernet score"):
        derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=5.0)


@pytest.mark.parametrize("bad", [{"miou": "0.5"}, {}, 0.5])
def test_other_scores_are_still_refused(bad):
    space = _space()
    params = make_archparams(space, None, _role(space))
    params["branch_scores"] = {"student": {"8": bad}}
    with pytest.raises(UserError, match=r"branch_scores.student.8.miou must be a number or null"):
        validate_archparams(params)


def test_official_compat_refuses_an_unknown_score_in_one_line():
    from fasterseg.arch.official import derive_compat

    with pytest.raises(UserError, match="needs branch_scores.student.8,32 with miou"):
        derive_compat(_role(SearchSpaceConfig()), "student",
                      {"8,32": {"miou": None, "latency_ms": 5.0},
                       "16,32": {"miou": 0.2, "latency_ms": 4.0}}, SearchSpaceConfig(), 19)
