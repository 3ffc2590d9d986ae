"""No absolute machine paths in tracked files: the shared folder is ``../shared`` next to the
checkout (or ``$FASTERSEG_SHARED``), results record paths relative to the checkout.

Generic placeholders in examples (``/data/camvid``) are fine; home folders, ``/work/...``,
``/tmp/...`` and the like name one machine and are not.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MACHINE_PATH = re.compile(
    r"(?<![\w.~$/-])(?:/(?:work|root|home|Users|mnt|opt|tmp|srv|scratch|private|var/folders)"
    r"/[\w.-]|[A-Za-z]:\\\\?Users\\)")


def machine_paths(text: str) -> list[str]:
    return [m.group(0) for m in MACHINE_PATH.finditer(text)]


def test_pattern():
    assert machine_paths("root=/work/shared/data/camvid") == ["/work/s"]
    assert machine_paths('"run_dir": "/tmp/bench_camvid"') == ["/tmp/b"]
    assert machine_paths("see /root/.cache/x and /home/me/y") == ["/root/.", "/home/m"]
    assert not machine_paths("fasterseg data check /data/camvid; ../shared/data; runs/tmp/x")
    assert not machine_paths("https://example.org/home/page $FASTERSEG_SHARED/reference")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / f for f in out.decode().split("\0") if f]


def test_tracked_files_have_no_machine_paths():
    me = Path(__file__).resolve()
    found = []
    for path in tracked_files():
        if path.resolve() == me or path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for n, line in enumerate(text.splitlines(), 1):
            if machine_paths(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:120]}")
    assert not found, "absolute machine paths (use ../shared, $FASTERSEG_SHARED or a relative " \
                      "path):\n" + "\n".join(found)
