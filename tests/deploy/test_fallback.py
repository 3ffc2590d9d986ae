"""The fp32 fallback search shared by both int8 engines, with a fake engine (no quantization).

The fake: every layer kept in fp32 adds its own fixed gain to a base agreement; one layer helps
only alone (its gain vanishes once another is kept), so the ranking and the "dropped when no
gain" rule can be checked.
"""

from __future__ import annotations

import json

import pytest

from fasterseg.deploy import fallback

GAINS = {"c0": 0.004, "c1": 0.0005, "c2": 0.0, "c3": 0.002, "c4": -0.001}


class FakeEngine:
    def __init__(self, base: float = 0.99, gains: dict[str, float] | None = None,
                 lonely: str | None = None) -> None:
        self.base, self.gains, self.lonely = base, dict(gains or GAINS), lonely
        self.calls: list[list[str]] = []

    def build(self, fp32: list[str]) -> tuple[float, tuple[str, ...]]:
        self.calls.append(list(fp32))
        agree = self.base + sum(self.gains.get(n, 0.0) for n in fp32)
        if self.lonely in fp32 and len([n for n in fp32 if n in self.gains]) > 1:
            agree -= self.gains[self.lonely]
        return agree, tuple(fp32)


def test_ranked_by_gain_and_stops_at_the_floor():
    eng = FakeEngine()
    found = fallback.search(eng.build, list(GAINS), floor=0.9955, forced=["resize"])
    # c0 (+0.4) and then c3 (+0.2) reach 99.6 %; the ends (c0, c4) would have tried c4 next
    assert found.kept == ["c0", "c3"] and found.fp32 == ["resize", "c0", "c3"]
    assert found.reached and found.agreement == pytest.approx(0.996)
    assert found.model == ("resize", "c0", "c3")  # the model built with exactly those layers
    assert found.order == ["c0", "c3", "c1"]  # zero and negative gains are never tried
    # one base build, one per candidate (the scan), then two cumulative builds
    assert found.builds == len(eng.calls) == 1 + len(GAINS) + 2
    assert [s["fp32"] for s in found.steps] == [["resize"], ["c0"], ["c3"]]
    assert all(s["kept"] for s in found.steps[1:])
    json.dumps(found.steps, allow_nan=False)


def test_already_at_the_floor_builds_once():
    eng = FakeEngine(base=0.999)
    found = fallback.search(eng.build, list(GAINS), floor=0.995, forced=["resize"])
    assert found.reached and found.kept == [] and found.fp32 == ["resize"]
    assert eng.calls == [["resize"]] and found.sensitivity == {}


def test_no_floor_means_no_search():
    eng = FakeEngine(base=0.5)
    found = fallback.search(eng.build, list(GAINS), floor=None, forced=["c1"])
    assert eng.calls == [["c1"]] and found.fp32 == ["c1"] and found.reached is False


def test_max_fallback_and_best_model_when_the_floor_is_not_reached():
    eng = FakeEngine()
    found = fallback.search(eng.build, list(GAINS), floor=0.9999, max_fallback=2)
    assert found.kept == ["c0", "c3"] and not found.reached
    assert found.agreement == pytest.approx(0.996) and found.model == ("c0", "c3")


def test_a_layer_that_gains_nothing_in_company_is_dropped():
    eng = FakeEngine(lonely="c3")  # c3 helps alone, not once c0 is fp32
    found = fallback.search(eng.build, list(GAINS), floor=0.9999)
    assert found.kept == ["c0", "c1"]  # c3 tried after c0, gained nothing, dropped
    assert {"fp32": ["c3"], "kept": False} == {k: found.steps[2][k] for k in ("fp32", "kept")}
    assert found.agreement == pytest.approx(0.9945) and "c3" not in found.fp32


def test_gain_per_cost_prefers_cheap_layers():
    # c0 gains most but costs 100x: per MAC, c3 then c1 come first
    cost = {"c0": 100.0, "c1": 1.0, "c3": 1.0}
    eng = FakeEngine()
    found = fallback.search(eng.build, list(GAINS), floor=0.9922, cost=cost)
    assert found.order == ["c3", "c1", "c0"]
    assert found.kept == ["c3", "c1"] and found.reached


def test_score_one_replaces_the_scan_builds():
    eng = FakeEngine()
    scores = {n: 0.99 + g for n, g in GAINS.items()}
    found = fallback.search(eng.build, list(GAINS), floor=0.9955, score_one=scores.__getitem__)
    assert found.sensitivity == scores
    assert eng.calls == [[], ["c0"], ["c0", "c3"]]  # no build per candidate


def test_rank_keeps_graph_order_on_ties():
    assert fallback.rank({"a": 0.5, "b": 0.6, "c": 0.6}, 0.4) == ["b", "c", "a"]
    assert fallback.rank({"a": 0.5}, 0.5) == []
    # no cost known for b: it counts at the mean of the others (2), not as free
    assert fallback.rank({"a": 0.6, "b": 0.6, "c": 0.5}, 0.4, {"a": 1.0, "c": 3.0}) == \
        ["a", "b", "c"]


def test_noise_level_gains_are_not_worth_fp32():
    """Layers that add less than ``min_gain`` stay int8 even when the floor is out of reach:
    they would cost latency for noise."""
    eng = FakeEngine(gains={"c0": 0.005, "c1": 0.0001, "c2": 0.00015})
    found = fallback.search(eng.build, ["c0", "c1", "c2"], floor=0.999, min_gain=0.0002)
    assert found.kept == ["c0"] and found.order == ["c0", "c2", "c1"] and not found.reached
    assert [s["kept"] for s in found.steps[1:]] == [True, False, False]
    eng = FakeEngine(gains={"c0": 0.005, "c1": 0.0001, "c2": 0.00015})
    assert fallback.search(eng.build, ["c0", "c1", "c2"], floor=0.999, min_gain=0.0).kept == \
        ["c0", "c2", "c1"]
