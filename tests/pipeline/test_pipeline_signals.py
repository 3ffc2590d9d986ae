"""SIGTERM / SIGINT sent to the pipeline's own process reach the running stage, which saves.

A scheduler's ``kill PID`` (or ``kill -INT``) hits only the pipeline process, not its process
group: unless the pipeline forwards the signal, the stage command keeps running orphaned, or dies
later without writing its checkpoint. Ctrl-C at a terminal (the whole foreground group) must still
reach the stage exactly once, or its second-Ctrl-C path would start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# the stage command: what train/search do on a signal (save last.pt, exit 128 + signal number)
FAKE_STAGE = textwrap.dedent("""
    import os, signal, sys, time
    d = sys.argv[1]
    def save(signum, frame):
        with open(os.path.join(d, f"got_{signum}"), "a") as f:
            f.write("x")
        time.sleep(0.3)  # writing the checkpoint takes a while
        with open(os.path.join(d, "last.pt"), "w") as f:
            f.write("saved")
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, save)
    signal.signal(signal.SIGINT, save)
    with open(os.path.join(d, "child.pid"), "w") as f:
        f.write(str(os.getpid()))
    print("ready", flush=True)
    time.sleep(120)
    sys.exit(3)
""")

# `fasterseg pipeline` with one stage that runs FAKE_STAGE (no cost probe, no real training, no
# torch import for env.json: seconds to start)
DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import fasterseg.pipeline.estimate as estimate
    import fasterseg.pipeline.stages as stages
    import fasterseg.utils.environment as environment
    from fasterseg.pipeline import runner
    from fasterseg.cli.main import main
    fake, d = sys.argv[1], Path(sys.argv[2])
    runner.stage_command = lambda argv: [sys.executable, fake, str(d)]
    stages.build_stages = lambda cfg, out: [
        stages.Stage("teacher", "fake teacher", ["train"], run_dir=d / "run", kind="train")]
    estimate.estimate_pipeline = lambda cfg, todo: ({s.name: 1.0 for s in todo}, "fake")
    environment.collect_env = lambda: {"fake": True}
    sys.exit(main(["pipeline", "-c", "demo_smoke", "--out", str(d / "out")]))
""")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"pipeline exited early: {proc.communicate()[0]}"
        assert time.monotonic() - t0 < timeout, f"no {path.name} after {timeout:.0f} s"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_and_signal(tmp_path: Path, signum: int, to_group: bool) -> tuple[int, str, int]:
    """Start the pipeline, signal it once the stage runs; (exit code, output, stage pid)."""
    (tmp_path / "fake_stage.py").write_text(FAKE_STAGE)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "fake_stage.py"),
         str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        process_group=0,  # its own group, standing in for a terminal's foreground job
    )
    child = 0
    try:
        _wait_for(tmp_path / "child.pid", proc)
        time.sleep(0.2)  # the handlers are set before child.pid is written; let it reach sleep
        child = int((tmp_path / "child.pid").read_text())
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        if child and _alive(child):  # before the fix: an orphan left sleeping
            os.kill(child, signal.SIGKILL)
    return proc.returncode, out, child


@pytest.mark.parametrize("signum, code, how", [
    (signal.SIGTERM, 143, "SIGTERM"),
    (signal.SIGINT, 130, "Ctrl-C"),
])
def test_signal_to_the_pipeline_process_reaches_the_stage(tmp_path, signum, code, how):
    rc, out, child = _run_and_signal(tmp_path, signum, to_group=False)
    assert (tmp_path / f"got_{int(signum)}").read_text() == "x", out  # forwarded once
    assert (tmp_path / "last.pt").read_text() == "saved", out  # the stage saved before exiting
    assert not _alive(child)  # no orphan
    assert rc == code, out
    assert f"interrupted during stage teacher ({how})" in out, out
    assert not (tmp_path / "out" / "stages" / "teacher.json").exists()  # resumable, not done


def test_ctrl_c_at_a_terminal_reaches_the_stage_exactly_once(tmp_path):
    rc, out, _ = _run_and_signal(tmp_path, signal.SIGINT, to_group=True)
    assert (tmp_path / f"got_{int(signal.SIGINT)}").read_text() == "x", out  # not twice
    assert (tmp_path / "last.pt").read_text() == "saved", out
    assert rc == 130, out
    assert "interrupted during stage teacher (Ctrl-C)" in out, out


def _raise_on_sigterm(signum, frame):
    raise RuntimeError("SIGTERM reached the pipeline's own handler: it was not forwarded")


def test_a_stop_asked_as_the_stage_finishes_keeps_the_stage_and_stops(monkeypatch, tmp_path):
    from fasterseg.pipeline import runner
    from fasterseg.pipeline.stages import Stage

    # a stage that ignores SIGTERM (too late to stop it) and then finishes normally
    finishes = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(0.5); print('{\"ok\": 1}')")
    monkeypatch.setattr(runner, "stage_command", lambda argv: [sys.executable, "-c", finishes])
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # fails cleanly if not forwarded
    try:
        stage = Stage("teacher", "fake teacher", ["train"], kind="train")

        def echo(line: str) -> None:  # runs in the main thread while the stage runs
            if line == "ready":
                signal.raise_signal(signal.SIGTERM)

        with pytest.raises(runner.StageInterrupted) as e:
            runner.run_stage(tmp_path / "out", stage, echo=echo)
        assert signal.getsignal(signal.SIGTERM) is _raise_on_sigterm  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == 143 and e.value.finished
    assert runner.is_done(tmp_path / "out", stage)  # its work is kept: skipped next time
    assert "as stage teacher finished" in e.value.describe()
    assert "starts over" not in e.value.describe()


def test_running_a_stage_restores_the_signal_handlers(monkeypatch, tmp_path):
    from fasterseg.pipeline import runner
    from fasterseg.pipeline.stages import Stage

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for code, outcome in [("import sys; sys.exit(130)", pytest.raises(runner.StageInterrupted)),
                          ("print('{}')", contextlib.nullcontext())]:
        monkeypatch.setattr(runner, "stage_command", lambda argv, c=code: [sys.executable, "-c", c])
        with outcome:
            runner.run_stage(tmp_path / "out", Stage("s", "fake", ["train"]))
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
