"""`latency build` notices a busy machine (entries inflated 4x were seen at a 25 % CPU share)."""

from __future__ import annotations

import logging

from fasterseg.latency import build


def test_cpu_share_is_the_fraction_of_thread_time_received():
    assert build.cpu_share(2.0, 2.0, 1) == 1.0
    assert build.cpu_share(1.0, 4.0, 1) == 0.25
    assert build.cpu_share(2.0, 2.0, 2) == 0.5
    assert build.cpu_share(1.0, 0.0, 1) == 1.0


def test_build_warns_and_records_share_when_starved(tmp_path, monkeypatch, caplog):
    from fasterseg.config.search_space import SearchSpaceConfig

    space = SearchSpaceConfig(num_layers=2, ratios=[4], operators=["skip", "conv"])
    monkeypatch.setattr(build, "cpu_share", lambda cpu, wall, threads: 0.3)
    with caplog.at_level(logging.WARNING, logger="fasterseg.latency.build"):
        table = build.build_table(space, (64, 64), tmp_path / "lut.json", threads=1, warmup=0,
                                  reps=1, rounds=1, progress=False)
    assert table.meta["cpu_share"] == 0.3
    assert "busy" in caplog.text
