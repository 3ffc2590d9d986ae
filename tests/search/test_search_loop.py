"""A tiny co-search end to end (L=4, 64x128, 2+2 iterations), exact resume, the CLI contract."""

import json
from pathlib import Path

import pytest
import torch

from fasterseg.config.core import to_dict


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, lut, tiny_cfg):
    from fasterseg.engine.search_loop import search

    run = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    result = search(tiny_cfg(), run, lut=str(lut))
    return run, result


def test_tiny_cosearch_writes_valid_arch_params(full_run):
    from fasterseg.arch.archparams import load_archparams

    run, result = full_run
    assert result.phase == "search" and result.epoch == 1 and result.step == 4
    params = load_archparams(run)
    assert params["stage"] == "search" and params["epoch"] == 1
    assert set(params["branch_scores"]["student"]) == {"8", "16", "32", "8,16", "8,32", "16,32"}
    assert params["lut"] is not None
    # the architecture step moved the arch parameters away from their 1e-3 initialisation
    alpha = torch.tensor(params["student"]["alpha"][0])
    assert not torch.allclose(alpha, torch.full_like(alpha, 1e-3))
    for name in ("config.yaml", "env.json", "metrics.jsonl", "summary.csv", "last.pt", "search.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["stage"] for r in epochs] == ["pretrain", "search"]
    last = epochs[-1]
    assert last["student_latency_ms"] > 0 and 0 <= last["student_entropy_alpha"] <= 1
    assert "val_miou_student_16+32" in last and "student_skip_share" in last


def test_derive_from_the_search_output(full_run):
    from fasterseg.arch.archparams import load_archparams
    from fasterseg.models import build_model

    run, result = full_run
    teacher, student, report = result.model.derive(
        branch_scores=load_archparams(run)["branch_scores"])
    for arch in (teacher, student):
        net = build_model(arch).eval()
        with torch.no_grad():
            y = net(torch.randn(1, 3, 64, 128))
        assert y.shape[-2:] == (64, 128)


def test_resume_after_a_kill_is_exact(full_run, tmp_path, lut, tiny_cfg):
    from fasterseg.engine.search_loop import search

    run_full, full = full_run
    run = tmp_path / "killed"
    torch.manual_seed(0)
    first = search(tiny_cfg(), run, lut=str(lut), max_steps=3)  # stops mid search epoch
    assert first.stopped_early and first.step == 3 and (run / "last.pt").is_file()
    second = search(tiny_cfg(), run, lut=str(lut), resume=True)
    assert second.step == 4
    a, b = full.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6)]
    assert not bad, bad[:5]
    p_full = json.loads((run_full / "arch_params.json").read_text())
    p_res = json.loads((run / "arch_params.json").read_text())
    for role in ("teacher", "student"):
        for name in ("alpha", "beta", "gamma"):
            for x, y in zip(p_full[role][name] or [], p_res[role][name] or []):
                if x is not None:
                    assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-7), (role, name)


def test_cli_without_lut_names_the_build_command(tmp_path, capsys, tiny_cfg):
    import yaml

    from fasterseg.cli.main import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(to_dict(tiny_cfg())))
    code = main(["search", "-c", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "fasterseg latency build" in err and "latency_weight=0" in err


def test_cli_json_and_next_step(tmp_path, capsys, tiny_cfg):
    import yaml

    from fasterseg.cli.main import main

    d = to_dict(tiny_cfg(pretrain_epochs=0, iters_per_epoch=1, latency_weight=0.0, eval_every=0))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d))
    code = main(["search", "-c", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert any(line.startswith("next: fasterseg derive") for line in out)
    result = json.loads(out[-1])
    assert result["steps"] == 1 and Path(result["arch_params"]).is_file()
    assert result["branch_scores"]["student"], "eval_every=0 must still score the heads once"
    assert main(["search", "-c", str(cfg), "--out", str(tmp_path / "run")]) == 1  # exists: no overwrite
