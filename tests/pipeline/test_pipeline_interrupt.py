"""A stage stopped by Ctrl-C or SIGTERM is interrupted (resumable), not failed: same exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fasterseg.errors import UserError
from fasterseg.pipeline import runner
from fasterseg.pipeline.stages import Stage

# fake stage commands: what train/search do on Ctrl-C / SIGTERM (exit 130 / 143), or a process
# the signal killed outright (status -15), or a real failure
FAKE = {
    "ctrl_c": "import sys; print('interrupted: saved last.pt'); sys.exit(130)",
    "sigterm": "import sys; print('interrupted: saved last.pt'); sys.exit(143)",
    "killed": "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    "fails": "import sys; print('error: bad config'); sys.exit(1)",
}


@pytest.fixture
def fake_stage(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "stage_command", lambda argv: [sys.executable, "-c", FAKE[argv[0]]])

    def make(kind: str, with_checkpoint: bool = False) -> Stage:
        run_dir = tmp_path / "runs" / kind
        if with_checkpoint:
            run_dir.mkdir(parents=True)
            (run_dir / "last.pt").write_bytes(b"")
        return Stage(kind, f"fake {kind}", [kind], run_dir=run_dir, kind="train")

    return make


@pytest.mark.parametrize("kind, code", [("ctrl_c", 130), ("sigterm", 143), ("killed", 143)])
def test_signal_stopped_stage_is_interrupted_with_its_code(fake_stage, tmp_path, kind, code):
    out = tmp_path / "out"
    stage = fake_stage(kind, with_checkpoint=True)
    with pytest.raises(runner.StageInterrupted) as e:
        runner.run_stages(out, [stage], {}, say=lambda s: None)
    assert e.value.code == code and e.value.stage == kind
    assert not runner.is_done(out, stage)  # no marker: the next run resumes it
    msg = e.value.describe()
    assert "interrupted during stage" in msg and "failed" not in msg
    assert "run the same pipeline command again" in msg and str(stage.run_dir) in msg


def test_interrupted_stage_without_checkpoint_says_it_starts_over(fake_stage, tmp_path):
    with pytest.raises(runner.StageInterrupted) as e:
        runner.run_stage(tmp_path / "out", fake_stage("sigterm"))
    assert e.value.resume_from is None and "starts over" in e.value.describe()


def test_a_real_failure_is_still_a_failure(fake_stage, tmp_path):
    with pytest.raises(UserError, match=r"stage fails failed \(exit 1\): error: bad config"):
        runner.run_stage(tmp_path / "out", fake_stage("fails"))


def test_pipeline_command_exits_with_the_stage_code(monkeypatch, tmp_path, capsys):
    from fasterseg.cli.main import main

    def interrupted(out, stages, *a, **k):
        raise runner.StageInterrupted("teacher", 143, Path(out) / "teacher")

    monkeypatch.setattr(runner, "run_stages", interrupted)
    code = main(["pipeline", "-c", "demo_smoke", "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert code == 143
    assert "interrupted during stage teacher (SIGTERM)" in out and "resume" in out
