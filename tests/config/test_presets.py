"""One preset resolver: files as given, ``configs/...`` paths and names from the package data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fasterseg.config.core import load_yaml
from fasterseg.config.presets import available, preset_root, resolve_preset
from fasterseg.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory outside the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_presets_are_package_data():
    root = preset_root()
    assert root == REPO / "fasterseg" / "configs"
    assert set(available("train")) >= {"synthetic_tiny", "camvid", "cityscapes", "bdd100k"}
    assert set(available("pipeline")) >= {"demo", "demo_smoke", "camvid_cpu"}
    assert "synthetic_tiny" in available("search")


def test_checkout_keeps_configs_symlink():
    """``configs`` at the root is a relative symlink (documented commands run from the checkout)."""
    link = REPO / "configs"
    assert link.is_symlink() and os.readlink(link) == "fasterseg/configs"
    mode = subprocess.run(["git", "ls-files", "-s", "configs"], cwd=REPO, capture_output=True,
                          text=True).stdout.split()
    if mode:  # a git checkout: stored as a symlink, not as a copy
        assert mode[0] == "120000"


@pytest.mark.parametrize("spec, kind", [
    ("synthetic_tiny", "train"), ("synthetic_tiny.yaml", "train"),
    ("configs/train/synthetic_tiny.yaml", None), ("train/synthetic_tiny", None),
    ("configs/train/synthetic_tiny.yaml", "search"),  # an explicit kind in the path wins
])
def test_names_resolve_from_any_directory(elsewhere, spec, kind):
    p = resolve_preset(spec, kind)
    assert p == preset_root() / "train" / "synthetic_tiny.yaml"
    assert load_yaml(p)


def test_existing_file_wins(elsewhere):
    own = elsewhere / "configs" / "train" / "synthetic_tiny.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("train: {epochs: 1}\n")
    assert resolve_preset("configs/train/synthetic_tiny.yaml") == Path("configs/train/synthetic_tiny.yaml")
    (elsewhere / "synthetic_tiny").write_text("train: {epochs: 2}\n")
    assert resolve_preset("synthetic_tiny", "train") == Path("synthetic_tiny")
    assert resolve_preset(str(own), "train") == own


@pytest.mark.parametrize("spec, kind, names", [
    ("nosuch", "train", "cityscapes, synthetic_tiny"),
    ("configs/search/nosuch.yaml", None, "synthetic_tiny"),
    ("dir/nosuch.yaml", None, "train: "),
    ("/nonexistent/abs.yaml", "pipeline", "demo_smoke"),
])
def test_unknown_is_one_line_with_names(elsewhere, spec, kind, names):
    with pytest.raises(UserError) as e:
        resolve_preset(spec, kind)
    msg = str(e.value)
    assert "\n" not in msg and spec in msg and names in msg


def test_pipeline_nested_references_resolve(elsewhere):
    """``config:`` / ``space:`` inside every shipped pipeline name a shipped preset."""
    from fasterseg.config.core import load_config
    from fasterseg.config.pipeline import PipelineConfig
    from fasterseg.pipeline.paths import resolve_preset as stage_preset

    for name in available("pipeline"):
        cfg = load_config(PipelineConfig, resolve_preset(name, "pipeline"))
        for ref, kind in ((cfg.latency.space, "search"), (cfg.search.config, "search"),
                          (cfg.train.config, "train")):
            assert Path(stage_preset(ref, kind)).is_relative_to(preset_root()), (name, ref)
    # the dataclass defaults too
    default = PipelineConfig()
    assert Path(stage_preset(default.train.config, "train")).is_file()
    assert Path(stage_preset(default.search.config, "search")).is_file()


def test_cli_names_preset_from_empty_directory(elsewhere, capsys):
    import argparse

    from fasterseg.cli.main import main
    from fasterseg.cli.pipeline import resolve_config

    args = argparse.Namespace(set=[], data=None, device=None, out=None)
    assert resolve_config("demo_smoke", args).name == "demo-smoke"
    assert resolve_config("configs/pipeline/camvid_cpu.yaml", args).name
    rc = main(["pipeline", "-c", "configs/pipeline/nosuch.yaml", "--estimate-only"])
    assert rc != 0
    assert "demo_smoke" in capsys.readouterr().err


def test_every_preset_is_declared_package_data():
    """pyproject's package-data covers every file under fasterseg/configs (the wheel ships them;
    `.ci/run` installs the wheel and runs the presets from an empty directory)."""
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["fasterseg"]
    pkg = REPO / "fasterseg"
    shipped = {p for pat in patterns for p in pkg.glob(pat)}
    presets = {p for p in (pkg / "configs").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert presets and presets <= shipped, sorted(str(p) for p in presets - shipped)
