"""Signals during long runs: SIGTERM behaves like Ctrl-C, and checkpoint writes finish first.

``sigterm_as_interrupt()`` makes ``kill PID`` (and a scheduler's or torchrun's SIGTERM) take the
Ctrl-C path of ``train``/``search``: save ``last.pt``, say how to resume, exit 143. Only the
process that installed it reacts that way; forked DataLoader workers inherit the handler and
simply die as before. ``deferred_signals()`` holds Ctrl-C / SIGTERM back while a checkpoint is
being written, so a second Ctrl-C in the save after the first cannot abort the very save the
exit message then reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same code saves the checkpoint; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 128 + signal number (143) for SIGTERM: the shell's convention."""
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``) in this process.

    The previous handler is restored on exit. Outside the main thread (where handlers cannot be
    set) this does nothing.
    """
    if not _in_main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame) -> None:
        if os.getpid() != owner:  # a forked worker: die the default way, as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def deferred_signals(what: str = "a checkpoint") -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them to the restored handlers.

    Used around checkpoint writes: the write is atomic either way, but an interrupt that aborts
    the save in a Ctrl-C handler would leave the run at an older ``last.pt`` than the message
    claims. Does nothing outside the main thread.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame) -> None:
        if not pending:
            logger.warning("still writing %s: the %s is handled once it is saved", what,
                           signal.Signals(signum).name)
        pending.append(signum)

    sigs = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, hold) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)  # None: set outside Python
        for s in dict.fromkeys(pending):  # once per kind, in arrival order
            signal.raise_signal(s)
