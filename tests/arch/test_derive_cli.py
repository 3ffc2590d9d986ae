"""``fasterseg derive RUN_DIR`` on a tiny arch_params.json written in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fasterseg.arch.archparams import gamma_rows, load_archparams, make_archparams, write_archparams
from fasterseg.arch.schema import load_arch
from fasterseg.cli.main import main
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError


def tiny_params(L: int = 6, seed: int = 0) -> dict:
    space = SearchSpaceConfig(num_layers=L, ratios=[4, 8], teacher_stem_ratio=8,
                              teacher_head_ratio=8, student_stem_ratio=8, student_head_ratio=8)
    rng = np.random.default_rng(seed)

    def role(gamma: bool) -> dict:
        return {
            "alpha": [rng.normal(size=(L - j, 5)) for j in range(3)],
            "beta": [None] + [rng.normal(size=(L - j - 1, 2)) for j in (1, 2)],
            "gamma": [rng.normal(size=(gamma_rows(L, j), 2)) for j in range(3)] if gamma else None,
        }

    scores = {r: {"8": {"miou": 0.2}, "16": {"miou": 0.25}, "32": {"miou": 0.22},
                  "8,16": {"miou": 0.30}, "8,32": {"miou": 0.31}, "16,32": {"miou": 0.28}}
              for r in ("teacher", "student")}
    return make_archparams(space, role(False), role(True), epoch=2, branch_scores=scores,
                           lut="does/not/exist.json", latency_target_ms=8.3)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_derive_cli_writes_archs_diagrams_and_json(tmp_path, capsys):
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", tiny_params())
    assert main(["derive", str(run), "--json"]) == 0
    out = capsys.readouterr().out
    res = last_json(out)
    assert set(res) >= {"teacher", "student", "branches"}
    assert len(res["branches"]) == 2
    for role in ("teacher", "student"):
        arch = load_arch(run / f"{role}.json")  # validates against the schema
        assert arch.provenance["role"] == role
        assert (run / f"{role}.png").stat().st_size > 1000
        assert res[role] == str(run / f"{role}.json")
    student = load_arch(run / "student.json")
    assert sorted(b.output_rate for b in student.branches) == sorted(res["branches"])
    assert "next: fasterseg train" in out and "teacher.json" in out
    assert "conv" in out  # the per-branch cell table
    report = json.loads((run / "derive_report.json").read_text())
    assert report["latency"]["kind"] == "mac_proxy"


def test_derive_cli_branches_and_out_dir(tmp_path, capsys):
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", tiny_params(seed=1))
    out_dir = tmp_path / "archs"
    assert main(["derive", str(run / "arch_params.json"), "-o", str(out_dir), "--branches", "1",
                 "--no-diagram", "--target-ms", "5", "--json"]) == 0
    res = last_json(capsys.readouterr().out)
    assert len(res["branches"]) == 1
    assert (out_dir / "student.json").is_file() and not (out_dir / "student.png").exists()
    assert len(load_arch(out_dir / "teacher.json").branches) == 1


def test_derive_cli_with_latency_table(tmp_path, capsys):
    from fasterseg.arch.derive import derive_from_params
    from fasterseg.latency.signature import arch_blocks
    from fasterseg.latency.table import LatencyTable

    params = tiny_params(seed=2)
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", params)
    # a synthetic table covering every candidate of both roles (1 ms per block)
    entries = {}
    for b in (1, 2):
        for key in ("8", "16", "32") if b == 1 else ("8,16", "8,32", "16,32"):
            scores = {r: {key: {"miou": 0.5}} for r in ("teacher", "student")}
            p = dict(params, branch_scores=scores)
            t, s, _ = derive_from_params(p, b=b, latency_fn=lambda a: 1.0, target_ms=1.0)
            for a in (t, s):
                for _, blk in arch_blocks(a, (64, 128)):
                    entries[blk.key] = 1.0
    lut = tmp_path / "lut.json"
    LatencyTable(entries, {"input_size": [64, 128], "num_classes": 19}).save(lut)
    assert main(["derive", str(run), "--lut", str(lut), "--json", "--no-diagram"]) == 0
    res = last_json(capsys.readouterr().out)
    student = load_arch(res["student"])
    assert res["latency_ms"] == pytest.approx(len(arch_blocks(student, (64, 128))))


def test_derive_cli_run_dir_without_params(tmp_path, capsys):
    assert main(["derive", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "arch_params.json" in err and "error:" in err
    with pytest.raises(UserError, match="arch_params.json"):
        load_archparams(tmp_path)


def test_derive_cli_usage_errors(tmp_path, capsys):
    assert main(["derive"]) == 1
    assert "--from-official" in capsys.readouterr().err
    assert main(["derive", str(tmp_path), "--to-params", "x.json"]) == 1
    assert "only with --from-official" in capsys.readouterr().err
    bad = tmp_path / "arch_params.json"
    bad.write_text("{not json")
    assert main(["derive", str(tmp_path)]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_derive_cli_student_only(tmp_path, capsys):
    params = tiny_params(seed=3)
    params["teacher"] = None
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", params)
    assert main(["derive", str(run), "--no-diagram", "--json"]) == 0
    out = capsys.readouterr().out
    res = last_json(out)
    assert res["teacher"] is None and res["student"] == str(run / "student.json")
    assert not (run / "teacher.json").exists()
    assert "next: fasterseg train" in out and "--teacher" not in out


def test_derive_cli_detail_channels_only_on_the_student(tmp_path, capsys):
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", tiny_params(seed=4))
    assert main(["derive", str(run), "--no-diagram", "--detail-channels", "8", "--json"]) == 0
    capsys.readouterr()
    assert load_arch(run / "student.json").detail_channels == 8
    assert load_arch(run / "teacher.json").detail_channels == 0
    report = json.loads((run / "derive_report.json").read_text())
    assert any("detail head" in w for w in report["warnings"])
    assert main(["derive", str(run), "--no-diagram", "--detail-channels", "9999"]) == 1
    err = capsys.readouterr().err
    assert "detail_channels must be an integer in 0..256" in err and "Traceback" not in err
    assert main(["derive", str(run), "--no-diagram", "--detail-channels", "8", "--detail-rate", "2"]) == 0
    assert load_arch(run / "student.json").detail_rate == 2
    assert load_arch(run / "teacher.json").detail_channels == 0
