"""Run pipeline stages as subprocesses of the CLI, skipping finished ones.

Each stage runs ``python -m fasterseg.cli.main <command> ... --json`` with its output in
``OUT/logs/<stage>.log``; its last stdout line (the command's JSON result) becomes the stage
marker ``OUT/stages/<stage>.json``. Subprocesses keep memory bounded (each stage frees everything
it allocated) and make Ctrl-C behave: the running command saves its checkpoint and the pipeline
stops with exit 130; the same command later resumes there. A stage stopped by SIGTERM (a
scheduler's ``kill``; exit 143 or signal 15) is interrupted the same way and the pipeline exits
143: it is not a failed stage.

The stage runs in its own process group and the pipeline forwards each SIGINT / SIGTERM it gets
to it, then waits: a ``kill PID`` aimed at the pipeline alone reaches the stage (no orphan, no
lost checkpoint), and Ctrl-C at a terminal reaches it exactly once (twice would start its
second-Ctrl-C path).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from fasterseg.engine.signals import exit_code, sigterm_as_interrupt
from fasterseg.errors import UserError
from fasterseg.pipeline.stages import Stage
from fasterseg.utils.io import write_json


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a stage; its command saved what it could.

    ``code`` is the exit code to pass on (130 Ctrl-C, 143 SIGTERM); ``resume_from`` the run
    directory whose checkpoint the next run of the same pipeline command continues from (None:
    the stage starts over); ``finished``: the signal came as the stage was finishing, which it
    did (its marker is written), so the pipeline stops after it.
    """

    def __init__(
        self, stage: str, code: int = 130, resume_from: Path | None = None, finished: bool = False
    ) -> None:
        super().__init__(stage)
        self.stage, self.code, self.resume_from = stage, code, resume_from
        self.finished = finished

    def describe(self) -> str:
        """One line: which stage stopped, how, and how to go on."""
        how = {130: "Ctrl-C", 143: "SIGTERM"}.get(self.code, f"exit {self.code}")
        if self.finished:
            return (f"interrupted ({how}) as stage {self.stage} finished; run the same pipeline "
                    "command again to go on: finished stages are skipped")
        where = (f"it resumes from its checkpoint in {self.resume_from}" if self.resume_from
                 else "it starts over")
        return (f"interrupted during stage {self.stage} ({how}); run the same pipeline command "
                f"again to resume: finished stages are skipped and {where}")


def interrupt_code(rc: int) -> int | None:
    """130 / 143 when a stage's exit status means Ctrl-C / SIGTERM, else None.

    Our commands catch the signal, save and exit 130 / 143; a process killed by the signal
    itself reports it as ``-2`` / ``-15``.
    """
    if rc in (130, -signal.SIGINT):
        return 130
    if rc in (143, -signal.SIGTERM):
        return 143
    return None


def marker_path(out: Path, stage: Stage) -> Path:
    return out / "stages" / f"{stage.name}.json"


def is_done(out: Path, stage: Stage) -> bool:
    """The stage's marker exists (and, for an evaluation, it evaluated the same checkpoint: a
    switch to ``train.fit_offsets`` must not keep the numbers of the checkpoint before it)."""
    if not marker_path(out, stage).is_file():
        return False
    if stage.argv[:1] == ["eval"] and len(stage.argv) > 1:
        evaluated = (load_marker(out, stage.name) or {}).get("checkpoint")
        if evaluated is not None and evaluated != stage.argv[1]:
            return False
    return True


def load_marker(out: Path, name: str) -> dict | None:
    p = out / "stages" / f"{name}.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _resumable(stage: Stage) -> bool:
    d = stage.run_dir
    return bool(d and d.is_dir() and any(d.glob("*.pt")))


def stage_argv(stage: Stage) -> list[str]:
    argv = list(stage.argv)
    if _resumable(stage):
        argv += ["--resume", str(stage.run_dir)]
    return argv


def stage_command(argv: list[str]) -> list[str]:
    """The subprocess that runs a stage's CLI arguments."""
    return [sys.executable, "-m", "fasterseg.cli.main", *argv]


def _interrupted(stage: Stage, code: int) -> StageInterrupted:
    return StageInterrupted(stage.name, code, stage.run_dir if _resumable(stage) else None)


class _Forwarder:
    """A SIGINT / SIGTERM handler that passes the signal on to the stage process, once started."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.received: list[int] = []  # in order, so the caller knows a stop was asked

    def __call__(self, signum: int, frame) -> None:
        self.received.append(signum)
        self._send(signum)

    def attach(self, proc: subprocess.Popen) -> None:
        """Forward to ``proc`` from now on, and what came while it was being started."""
        self.proc = proc
        for signum in self.received:
            self._send(signum)

    def _send(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


@contextlib.contextmanager
def forward_signals() -> Iterator[_Forwarder]:
    """Within the block, SIGINT / SIGTERM to this process go to the attached stage process.

    Set before the stage starts, so no signal falls into a gap where it would stop the pipeline
    and leave the stage orphaned. The previous handlers are restored on exit. Outside the main
    thread (where handlers cannot be set) this forwards nothing.
    """
    fwd = _Forwarder()
    if threading.current_thread() is not threading.main_thread():
        yield fwd
        return
    previous = {s: signal.signal(s, fwd) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield fwd
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)  # None: set outside Python


def run_stage(
    out: Path, stage: Stage, echo: Callable[[str], None] | None = None, env: dict | None = None
) -> dict:
    """Run one stage; returns its JSON result (also written as the stage marker)."""
    missing = [str(p) for p in stage.needs if not p.exists()]
    if missing:
        raise UserError(f"stage {stage.name} needs {missing[0]}, which an earlier stage should have made")
    t0 = time.perf_counter()
    if stage.func is not None:
        try:
            with sigterm_as_interrupt():  # SIGTERM stops an in-process stage like Ctrl-C
                result = stage.func()
        except KeyboardInterrupt as e:
            raise _interrupted(stage, exit_code(e)) from None
        result = {**result, "stage_seconds": time.perf_counter() - t0}
        write_json(marker_path(out, stage), result)
        return result
    log_path = out / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = stage_argv(stage)
    cmd = stage_command(argv)
    tail: deque[str] = deque(maxlen=20)
    last_json = None
    child_env = {**os.environ, **(env or {})}
    with open(log_path, "a") as log:
        log.write(f"$ fasterseg {' '.join(argv)}\n")
        log.flush()
        with forward_signals() as fwd:
            # its own process group: a terminal's Ctrl-C reaches it only through fwd, once
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                bufsize=1, stdin=subprocess.DEVNULL, process_group=0,
            )
            fwd.attach(proc)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    tail.append(line.rstrip())
                    if echo:
                        echo(line.rstrip())
                    s = line.strip()
                    if s.startswith("{") and s.endswith("}"):
                        try:
                            last_json = json.loads(s)
                        except json.JSONDecodeError:
                            pass
                rc = proc.wait()
            except BaseException:  # e.g. a failed log write: stop the stage the saving way
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
                raise
    code = interrupt_code(rc)
    if code is not None:
        raise _interrupted(stage, code)
    asked = 128 + fwd.received[0] if fwd.received and rc == 0 else None  # finished anyway
    if rc != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise UserError(f"stage {stage.name} failed (exit {rc}): {last}  [log: {log_path}]")
    result = dict(last_json) if isinstance(last_json, dict) else {}
    # Wall time of this invocation (a resumed stage counts only its last part).
    result["stage_seconds"] = time.perf_counter() - t0
    write_json(marker_path(out, stage), result)
    if asked is not None:
        raise StageInterrupted(stage.name, asked, None, finished=True)
    return result


def run_stages(
    out: Path,
    stages: list[Stage],
    estimates: dict[str, float],
    say: Callable[[str], None] = print,
    echo: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Run every unfinished stage in order, printing one progress line per stage."""
    results: dict[str, dict] = {}
    n = len(stages)
    for i, stage in enumerate(stages, 1):
        head = f"[{i:2d}/{n}] {stage.name:<18}"
        if is_done(out, stage):
            say(f"{head} done already (skipped)")
            results[stage.name] = load_marker(out, stage.name) or {}
            continue
        est = estimates.get(stage.name)
        resume = " (resuming)" if _resumable(stage) else ""
        say(f"{head} {stage.title}{resume}" + (f", ~{est:.0f} s" if est else "") + " ...")
        t0 = time.perf_counter()
        results[stage.name] = run_stage(out, stage, echo)
        say(f"{'':<{len(head)}} done in {time.perf_counter() - t0:.0f} s")
    return results
