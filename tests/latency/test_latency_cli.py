"""``fasterseg latency build / check / estimate`` in-process on a very small space."""

import json
from pathlib import Path

import pytest

from fasterseg.cli.main import main
from fasterseg.latency.table import LatencyTable

SPACE = str(Path(__file__).resolve().parents[2] / "configs" / "search" / "synthetic_tiny.yaml")
SMALL = ["--set", "space.num_layers=3", "--set", "space.ratios=[4]", "--size", "64x128",
         "--threads", "1", "--warmup", "1", "--reps", "2", "--rounds", "2"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "lut.json"
    assert main(["latency", "build", "--space", SPACE, *SMALL, "-o", str(out)]) == 0
    return out


def test_build_writes_a_complete_table(built, capsys):
    table = LatencyTable.load(built)
    m = table.meta
    assert m["backend"] == "torch" and m["device"] == "cpu" and m["threads"] == 1
    assert m["input_size"] == [64, 128] and m["reps"] == 2 and m["warmup"] == 1
    assert m["space"]["num_layers"] == 3 and m["space"]["ratios"] == [4]
    assert {"torch", "python"} <= set(m["versions"]) and m["date"] and m["device_name"]
    from fasterseg.latency.build import space_blocks
    from fasterseg.latency.check import table_space

    assert set(table.entries) == {b.key for b in space_blocks(table_space(table), (64, 128))}
    assert all(v > 0 or k.startswith("skip/") for k, v in table.entries.items())
    assert not table.pending


def test_rerun_resumes_and_skips_done_entries(built, capsys, tmp_path):
    # A partial table (some entries dropped, one with pending timings) is completed, not redone.
    table = LatencyTable.load(built)
    keys = sorted(table.entries)
    partial = LatencyTable({k: table.entries[k] for k in keys[5:]}, table.meta)
    partial.pending = {keys[0]: [1.0]}
    path = partial.save(tmp_path / "partial.json")
    capsys.readouterr()
    assert main(["latency", "build", "--space", SPACE, *SMALL, "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert "measuring 5 blocks" in out and f"{len(keys) - 5} already" in out
    done = LatencyTable.load(path)
    assert set(done.entries) == set(keys)
    assert all(done.entries[k] == table.entries[k] for k in keys[5:])
    # A different measurement setting is refused instead of mixing tables.
    argv = ["latency", "build", "--space", SPACE, *SMALL[:-6], "--threads", "2", "-o", str(path)]
    assert main(argv) == 1
    assert "threads" in capsys.readouterr().err
    import torch

    assert torch.get_num_threads() == 1  # a refused build leaves the process settings alone


def test_check_json_keys(built, capsys, tmp_path):
    plot = tmp_path / "fig3.png"
    rc = main(["latency", "check", "--lut", str(built), "--samples", "3", "--warmup", "1",
               "--reps", "2", "--rounds", "1", "--plot", str(plot), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"pearson_r", "mean_rel_error", "samples"} <= set(res)
    assert res["samples"] == 3 and len(res["points"]) == 3
    assert all(p["estimated_ms"] > 0 and p["measured_ms"] > 0 for p in res["points"])
    assert plot.stat().st_size > 1000


def test_estimate_and_missing_entries(built, capsys, tmp_path):
    # The published student uses widths this 1-ratio table does not have: a clear error.
    assert main(["latency", "estimate", "fasterseg_student", "--lut", str(built)]) == 1
    err = capsys.readouterr().err
    assert "no entry" in err and "nearest keys" in err and "Traceback" not in err
    import random

    from fasterseg.arch.sample import sample_arch
    from fasterseg.latency.check import table_space

    arch = sample_arch(table_space(LatencyTable.load(built)), random.Random(0))
    path = arch.save(tmp_path / "a.json")
    assert main(["latency", "estimate", str(path), "--lut", str(built), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    parts = ("stem", "cells", "aggregation", "decoder")
    assert res["latency_ms"] == pytest.approx(sum(res["parts"][k] for k in parts))


def test_usage_errors(tmp_path, capsys):
    assert main(["latency", "build", "--space", str(tmp_path / "nope.yaml"), "-o", "x.json"]) == 1
    out = str(tmp_path / "x.json")
    assert main(["latency", "build", "--space", SPACE, "--size", "100x128", "-o", out]) == 1
    assert "divisible" in capsys.readouterr().err
    assert main(["latency", "build", "--space", SPACE, "--backend", "tensorrt", "-o", out]) == 1
    assert main(["latency", "build", "--space", SPACE, "--clock", "cpu", "--threads", "2",
                 "-o", str(tmp_path / "x.json")]) == 1
    assert main(["latency", "check", "--lut", str(tmp_path / "none.json")]) == 1
