"""Lambda adaptation on the derived candidates' table latency (bounded, logged), the table check,
branch scores with eval_every=0, the search presets and amp resolution."""

import json
import logging

import pytest
import torch

from fasterseg.config.core import from_dict


def test_latency_window_keeps_lambda_bounded_and_logged(tmp_path, lut, tiny_cfg):
    from fasterseg.search.loop import search

    # an unreachable window: every epoch asks for more latency pressure
    cfg = tiny_cfg(pretrain_epochs=0, search_epochs=3, iters_per_epoch=1, eval_every=0,
               latency_range_ms=[0.001, 0.002], latency_weight=0.01, latency_weight_max=0.02)
    res = search(cfg, tmp_path / "run", lut=str(lut))
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["type"] == "epoch"]
    assert [r["latency_weight"] for r in epochs] == [0.01, 0.02, 0.02]
    assert [r["latency_weight_next"] for r in epochs] == [0.02, 0.02, 0.02]
    assert res.latency_weight == 0.02
    for r in epochs:  # the compared latency: each derived candidate's table latency
        cands = {k: v for k, v in r.items() if k.startswith("candidate_latency_ms_")}
        assert set(cands) == {"candidate_latency_ms_8+16", "candidate_latency_ms_8+32",
                              "candidate_latency_ms_16+32"}
        assert min(cands.values()) > 0
    # eval_every=0 still scores the heads once, at the end, for `fasterseg derive`
    params = json.loads((tmp_path / "run" / "arch_params.json").read_text())
    assert set(params["branch_scores"]["student"]) == {"8", "16", "32", "8,16", "8,32", "16,32"}


def test_adapt_rule_halves_doubles_and_caps():
    from fasterseg.search.latency import adapt_latency_weight

    assert adapt_latency_weight(0.01, {"a": 1.0, "b": 9.0}, (2.0, 8.0), 1.0) == 0.005  # a too fast
    assert adapt_latency_weight(0.01, {"a": 3.0, "b": 9.0}, (2.0, 8.0), 1.0) == 0.02
    assert adapt_latency_weight(0.01, {"a": 3.0, "b": 7.0}, (2.0, 8.0), 1.0) == 0.01
    assert adapt_latency_weight(0.8, {"a": 9.0}, (2.0, 8.0), 1.0) == 1.0


def test_table_for_another_device_warns_in_one_line(tmp_path, lut, tiny_cfg, caplog):
    from fasterseg.latency import LatencyTable
    from fasterseg.search.latency import load_latency_models

    t = LatencyTable.load(lut)
    cuda = tmp_path / "cuda_lut.json"
    LatencyTable(t.entries, {**t.meta, "device": "cuda", "device_name": "NVIDIA GeForce GTX 1080 Ti"}).save(cuda)
    with caplog.at_level(logging.WARNING):
        models = load_latency_models(tiny_cfg(), str(cuda), torch.device("cpu"))
    assert models is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "'cuda'" in warnings[0] and "'cpu'" in warnings[0]
    assert "\n" not in warnings[0]


def test_official_preset_values(tiny_cfg):
    paper = tiny_cfg()
    official = tiny_cfg(preset_values="official")
    assert paper.data_for("search").scales == [1.0]  # data.scales as configured
    assert official.data_for("search").scales == [0.75, 1.0, 1.25]  # the authors' jitter
    r = official.search.resolved()
    assert r.supernet_heads == "official" and r.latency_gamma == "gumbel_sampled"
    assert paper.search.resolved().supernet_heads == "paper"


def test_amp_auto_resolves_once_and_never_to_fp16(monkeypatch):
    import fasterseg.search.loop as loop

    seen = []
    monkeypatch.setattr(loop, "resolve_amp", lambda amp, dev: seen.append(amp) or "fp16")
    assert loop.resolve_search_amp("auto", torch.device("cuda")) == "off"
    monkeypatch.setattr(loop, "resolve_amp", lambda amp, dev: seen.append(amp) or "bf16")
    assert loop.resolve_search_amp("auto", torch.device("cpu")) == "bf16"
    assert seen == ["auto", "auto"]
    from fasterseg.errors import UserError

    with pytest.raises(UserError):
        from_dict(__import__("fasterseg.config.search", fromlist=["x"]).SearchRunConfig,
                  {"search": {"amp": "fp16"}})
