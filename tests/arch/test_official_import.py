"""Compatibility import of the authors' arch_0.pt / arch_1.pt: the published nets, exactly."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import fasterseg
from fasterseg.arch.official import (
    derive_official,
    load_official,
    official_role,
    official_to_params,
)
from fasterseg.arch.schema import load_arch, published_arch_path
from fasterseg.cli.main import main
from fasterseg.errors import UserError

# the shared folder: ../shared next to the checkout, or FASTERSEG_SHARED
SHARED = Path(os.environ.get("FASTERSEG_SHARED") or Path(__file__).resolve().parents[3] / "shared")
OFFICIAL = SHARED / "reference" / "official_arch"
needs_files = pytest.mark.skipif(
    not (OFFICIAL / "arch_0.pt").is_file() or not (OFFICIAL / "arch_1.pt").is_file(),
    reason="official arch files not available",
)


def _without_provenance(d: dict) -> dict:
    d = dict(d)
    d.pop("provenance")
    return d


@needs_files
@pytest.mark.parametrize("fname,role", [("arch_0.pt", "teacher"), ("arch_1.pt", "student")])
def test_official_files_give_the_published_nets(fname, role):
    raw = load_official(OFFICIAL / fname)
    assert official_role(raw) == role
    arch, report = derive_official(raw)
    published = load_arch(published_arch_path(f"fasterseg_{role}"))
    assert _without_provenance(arch.to_dict()) == _without_provenance(published.to_dict())
    assert report["branches"] == [32, 16]
    # the stored scalars give objectives 0.02810 ({8,32}) vs 0.06347 ({16,32}) (facts section 13)
    assert report["objectives"]["8,32"] == pytest.approx(0.02810, abs=5e-5)
    assert report["objectives"]["16,32"] == pytest.approx(0.06347, abs=5e-5)
    assert arch.provenance["compat"] == "official"


@needs_files
def test_official_unused_8_branch_and_shared_prefix():
    _, report = derive_official(load_official(OFFICIAL / "arch_1.pt"))
    assert report["all_branches"][8]["ops"] == [3, 3, 4, 4, 3, 3, 4, 3, 4]
    arch, _ = derive_official(load_official(OFFICIAL / "arch_0.pt"))
    assert arch.shared_prefix() == 4


@needs_files
def test_official_to_params_roundtrip_in_compat_mode(tmp_path):
    from fasterseg.arch.derive import derive_from_params

    raws = {"teacher": load_official(OFFICIAL / "arch_0.pt"),
            "student": load_official(OFFICIAL / "arch_1.pt")}
    params = official_to_params(raws)
    stored = params["branch_scores"]["student"]["16,32"]["latency_ms"]
    assert stored == pytest.approx(6.4140, abs=1e-4)
    teacher, student, _ = derive_from_params(json.loads(json.dumps(params)), compat="official")
    for role, arch in (("teacher", teacher), ("student", student)):
        published = load_arch(published_arch_path(f"fasterseg_{role}"))
        assert arch.branches == published.branches


def _cells_per_rate(branch) -> list[int]:
    return [sum(1 for c in branch.cells if c.rate == r) for r in (8, 16, 32)]


@needs_files
def test_default_rules_on_the_authors_params():
    """Issue 11: the default rules (wiring-consistent paths, minimum segment lengths) give the
    published student from the authors' parameters; without the minimums they do not."""
    from fasterseg.arch.derive import DeriveRules, derive_from_params

    raws = {"teacher": load_official(OFFICIAL / "arch_0.pt"),
            "student": load_official(OFFICIAL / "arch_1.pt")}
    params = official_to_params(raws)
    teacher, student, _ = derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=1.0)
    published = {r: load_arch(published_arch_path(f"fasterseg_{r}")) for r in raws}
    assert [b.output_rate for b in student.branches] == [32, 16]
    assert _cells_per_rate(student.branches[0]) >= [3, 3, 2]
    assert _cells_per_rate(student.branches[0]) == [4, 4, 2]
    assert _cells_per_rate(student.branches[1])[:2] == [6, 3]
    assert student.branches == published["student"].branches  # paper Table 7, exactly
    assert student.provenance["rules"]["min_seg"] == [[2, 3], [3, 3, 2]]
    # the teacher: same 1/32 branch; the 1/16 branch downsamples one layer later than the
    # authors' off-by-one (beta row k belongs to layer k + 2)
    assert teacher.branches[0] == published["teacher"].branches[0]
    assert _cells_per_rate(teacher.branches[1]) == [6, 10, 0]
    assert _cells_per_rate(published["teacher"].branches[1]) == [5, 11, 0]
    # without minimum segment lengths: the degenerate 1/32 branch of issue 11
    _, loose, _ = derive_from_params(params, latency_fn=lambda a: 1.0, target_ms=1.0,
                                     rules=DeriveRules(min_seg=()))
    assert _cells_per_rate(loose.branches[0]) == [7, 1, 1]


@needs_files
def test_from_official_cli(tmp_path, capsys):
    out = tmp_path / "archs"
    params = tmp_path / "p" / "arch_params.json"
    rc = main(["derive", "--from-official", str(OFFICIAL / "arch_1.pt"),
               str(OFFICIAL / "arch_0.pt"),
               "-o", str(out), "--to-params", str(params), "--no-diagram", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["teacher_matches_published"] and res["student_matches_published"]
    assert res["branches"] == [32, 16]
    for role in ("teacher", "student"):
        got = load_arch(out / f"{role}.json")
        assert got.branches == load_arch(published_arch_path(f"fasterseg_{role}")).branches
    # the params file derives again (compat mode) from the CLI
    assert main(["derive", str(params.parent), "--compat", "official", "--no-diagram"]) == 0
    again = load_arch(params.parent / "student.json")
    assert again.branches == load_arch(out / "student.json").branches


@needs_files
def test_role_override_and_mismatch(tmp_path):
    raw = load_official(OFFICIAL / "arch_1.pt")
    arch, _ = derive_official(raw, role="teacher")  # student tensors derived as a teacher: no skips
    assert arch.stem_ratio == 12 and all(c.op != "skip" for b in arch.branches for c in b.cells)
    with pytest.raises(UserError, match="ratio tensors"):
        derive_official(load_official(OFFICIAL / "arch_0.pt"), role="student")
    assert main(["derive", "--from-official", str(OFFICIAL / "arch_0.pt"),
                 str(OFFICIAL / "arch_0.pt"), "-o", str(tmp_path)]) == 1


class NotAllowed:
    """A class a weights-only unpickler must refuse."""

    def __init__(self) -> None:
        self.x = 1


def test_loading_is_weights_only(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"alpha_1_0": torch.zeros(16, 5), "payload": NotAllowed()}, evil)
    with pytest.raises(UserError, match="cannot read"):
        load_official(evil)
    with pytest.raises(UserError, match="not found"):
        load_official(tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(UserError, match="no alpha"):
        load_official(plain)


def test_no_unsafe_torch_load_in_the_package():
    root = Path(fasterseg.__file__).parent
    files = [*root.joinpath("arch").glob("*.py"), root / "cli" / "derive.py"]
    pattern = re.compile(r"weights_only\s*=\s*False|pickle\.load|allow_pickle\s*=\s*True")
    offenders = [str(f) for f in files if pattern.search(f.read_text())]
    assert offenders == []
    assert "weights_only=True" in (root / "arch" / "official.py").read_text()
