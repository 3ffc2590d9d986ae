"""An empty config is refused (it would silently run the paper's full-scale defaults), and
``derive`` on a search run without branch scores (``search.eval_every=0``) says why and what to do.
"""

import numpy as np
import pytest

from fasterseg.arch.archparams import gamma_rows, make_archparams, write_archparams
from fasterseg.cli.main import main
from fasterseg.config.core import load_yaml
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "{}\n", "---\n", "_base_:\n"])
def test_load_yaml_refuses_an_empty_config(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match="is empty: it would run the paper's full-scale defaults"):
        load_yaml(p)


def test_empty_base_is_refused_and_a_base_alone_is_fine(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 2\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\n")
    assert load_yaml(tmp_path / "child.yaml") == {"train": {"epochs": 2}}
    (tmp_path / "base.yaml").write_text("# nothing yet\n")
    with pytest.raises(UserError, match="base.yaml is empty"):
        load_yaml(tmp_path / "child.yaml")


@pytest.mark.parametrize("command", ["train", "search"])
def test_train_and_search_refuse_an_empty_config(tmp_path, capsys, command):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("# TODO\n")
    out_dir = tmp_path / "run"
    # The override only makes today's main fail fast (data.root missing) instead of training
    # paper-scale defaults for hours; the empty file must be refused before any override.
    argv = [command, "-c", str(cfg), "--out", str(out_dir), "--set", "data.preset=cityscapes"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"config {cfg} is empty" in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()  # nothing was started


def _params(branch_scores: dict) -> dict:
    L = 6
    space = SearchSpaceConfig(num_layers=L, ratios=[4, 8], teacher_stem_ratio=8,
                              teacher_head_ratio=8, student_stem_ratio=8, student_head_ratio=8)
    rng = np.random.default_rng(0)

    def role(gamma: bool) -> dict:
        return {
            "alpha": [rng.normal(size=(L - j, 5)) for j in range(3)],
            "beta": [None] + [rng.normal(size=(L - j - 1, 2)) for j in (1, 2)],
            "gamma": [rng.normal(size=(gamma_rows(L, j), 2)) for j in range(3)] if gamma else None,
        }

    return make_archparams(space, role(False), role(True), epoch=2, branch_scores=branch_scores)


def test_derive_without_branch_scores_names_the_cause(tmp_path, capsys):
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", _params({}))  # what eval_every=0 writes
    assert main(["derive", str(run), "--no-diagram"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    msg = lines[0]
    assert "has no branch scores for the student" in msg and "eval_every=0" in msg
    assert "--set search.eval_every=1" in msg and "--branches 3" in msg
    assert not (run / "student.json").exists()


def test_derive_without_scores_keeps_every_branch_when_asked(tmp_path, capsys):
    run = tmp_path / "run"
    write_archparams(run / "arch_params.json", _params({}))
    assert main(["derive", str(run), "--no-diagram", "--branches", "3"]) == 0
    assert (run / "student.json").is_file() and (run / "teacher.json").is_file()


def test_number_too_long_to_parse_is_one_line(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("train:\n  epochs: " + "9" * 5000 + "\n")
    with pytest.raises(UserError, match="holds an unreadable value"):
        load_yaml(p)
