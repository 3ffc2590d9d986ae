"""Test-wide settings: one quiet thread (the CI machine has 2 noisy cores), fixed seeds; shared
fixtures (pytest runs in importlib mode: fixtures here are shared, the module is not importable).
"""

import copy
import os
import signal
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The per-user cache (amp choice, deploy choices) of the tests' own: never the user's."""
    old = os.environ.get("FASTERSEG_CACHE")
    os.environ["FASTERSEG_CACHE"] = str(tmp_path_factory.mktemp("fasterseg_cache"))
    yield
    if old is None:
        os.environ.pop("FASTERSEG_CACHE", None)
    else:
        os.environ["FASTERSEG_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _signal_handlers_restored(request):
    """Each test leaves Ctrl-C / SIGTERM handling as it found it.

    A handler left installed by one test made a later one fail only in the full suite; this names
    the test that leaves one in a warning and puts the previous handler back, so later tests are
    unaffected.
    """
    sigs = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in sigs}
    yield
    changed = [s for s in sigs if signal.getsignal(s) != before[s]]
    for s in changed:
        signal.signal(s, signal.SIG_DFL if before[s] is None else before[s])
    if changed:  # a warning in the summary, not a failure: the suite's result stays its own
        warnings.warn(f"{request.node.nodeid} left a {', '.join(s.name for s in changed)} "
                      "handler installed (restored): restore the previous one (try/finally)",
                      stacklevel=1)


@pytest.fixture
def torchrun(tmp_path):
    """Run a script under ``torchrun --nproc-per-node 2`` (gloo, 1 thread each) in ``tmp_path``."""
    import subprocess
    import sys

    def run(script: str, timeout: int = 300) -> None:
        path = tmp_path / "ddp_script.py"
        path.write_text(script)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", str(path), str(tmp_path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return run


# A tiny derived network: one branch down to 1/32 ending in zoomed convolutions there (what needs
# >= 64 px inputs), 3 classes; builds and runs in well under a second on CPU.
_TINY_ARCH = {
    "schema": "fasterseg.arch/1", "name": "tiny32", "num_classes": 3,
    "stem_ratio": 2, "head_ratio": 2,
    "branches": [{"output_rate": 32, "cells": [
        {"op": "conv", "rate": 8, "stride": 2, "ratio": 2},
        {"op": "zoomed_conv", "rate": 16, "stride": 2, "ratio": 2},
        {"op": "zoomed_conv", "rate": 32, "stride": 1, "ratio": 2},
    ]}],
    "provenance": {"source": "test"},
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_arch():
    """``tiny_arch(**overrides)``: a fresh copy of the tiny 1/32 architecture dict on each call.

    A factory rather than a dict, so that no test can change it for the next one and
    module-scoped fixtures can use it too; e.g. ``build_model(tiny_arch(num_classes=5))``.
    """

    def make(**overrides) -> dict:
        return {**copy.deepcopy(_TINY_ARCH), **overrides}

    return make


# The longest files (a demo pipeline fixture and the seed/ablation studies on it; the docs
# walk-through) go first: with `-n 2 --dist loadfile` each file is one unit of work, and a long
# file started last would leave the other worker idle at the end.
_LONGEST_FIRST = ("tests/pipeline/test_demo_pipeline.py", "tests/docs/test_docs_commands.py")


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each file is kept
