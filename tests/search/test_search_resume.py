"""A resumed search keeps its config.yaml until it makes progress (as training does)."""

from __future__ import annotations

import yaml

from fasterseg.config.core import to_dict
from fasterseg.errors import UserError


def test_failed_resume_with_overrides_does_not_rewrite_config(tmp_path, tiny_cfg, monkeypatch):
    from fasterseg.cli.main import main
    from fasterseg.search import loop

    cfg = tmp_path / "tiny.yaml"
    d = to_dict(tiny_cfg(pretrain_epochs=0, iters_per_epoch=1, latency_weight=0.0, eval_every=0))
    cfg.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    assert main(["search", "-c", str(cfg), "--out", str(run)]) == 0
    before = (run / "config.yaml").read_text()

    def fails(*a, **k):
        raise UserError("out of memory (simulated)")

    monkeypatch.setattr(loop, "weight_step", fails)
    argv = ["search", "--resume", str(run), "--set", "search.search_epochs=2",
            "--set", "search.log_every=5"]
    assert main(argv) == 1
    assert (run / "config.yaml").read_text() == before  # a plain --resume is unaffected
    monkeypatch.undo()
    assert main(["search", "--resume", str(run), "--set", "search.search_epochs=2"]) == 0
    stored = yaml.safe_load((run / "config.yaml").read_text())["search"]
    assert stored["search_epochs"] == 2 and stored["log_every"] == 1  # persisted on progress
