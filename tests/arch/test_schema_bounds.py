"""Every number of an architecture file is bounded: one line naming the field and its range.

Without bounds, 10^6 cells allocated 7.5 GB in 52 s, ``"ratio": 2000`` asked for 9.2 GB and a
30-digit ratio printed a 44-line C++ backtrace from torch.
"""

import json

import pytest

from fasterseg.arch import SCHEMA_ID, Arch, load_arch
from fasterseg.arch.schema import ArchError
from fasterseg.cli.main import main


def _arch(ratio: int = 4, n_cells: int = 2, **top) -> dict:
    cells = [{"op": "conv", "rate": 8, "stride": 1, "ratio": ratio} for _ in range(n_cells)]
    d = {"schema": SCHEMA_ID, "name": "b", "num_classes": 5, "stem_ratio": 4, "head_ratio": ratio,
         "branches": [{"output_rate": 8, "cells": cells}], "provenance": {}}
    d.update(top)
    return d


def _load_error(tmp_path, d, raw: str | None = None) -> str:
    p = tmp_path / "a.json"
    p.write_text(raw if raw is not None else json.dumps(d))
    with pytest.raises(ArchError) as e:
        load_arch(p)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


@pytest.mark.parametrize("ratio", [0, 25, 2000, 10**30])
def test_cell_ratio_out_of_range(tmp_path, ratio):
    d = _arch()
    d["branches"][0]["cells"][0]["ratio"] = ratio
    msg = _load_error(tmp_path, d)
    assert "branches[0].cells[0].ratio must be an integer in 1..24" in msg


@pytest.mark.parametrize("field,value,rng", [
    ("num_classes", 255, "1..254"), ("num_classes", 0, "1..254"),
    ("stem_ratio", 25, "1..24"), ("stem_ratio", 10**30, "1..24"),
    ("head_ratio", 1000, "1..24"),
])  # fmt: skip
def test_top_level_numbers_out_of_range(tmp_path, field, value, rng):
    msg = _load_error(tmp_path, _arch(**{field: value}))
    assert f"{field} must be an integer in {rng}" in msg


def test_huge_number_is_shortened_in_the_message(tmp_path):
    msg = _load_error(tmp_path, _arch(stem_ratio=10**300))
    assert "stem_ratio must be an integer in 1..24" in msg and "characters" in msg


def test_too_many_cells_is_refused(tmp_path):
    msg = _load_error(tmp_path, _arch(n_cells=10**4))  # checked before any cell is parsed
    assert "branches[0].cells must hold 1..48 cells, got 10000" in msg
    assert "1..48 cells, got 49" in _load_error(tmp_path, _arch(n_cells=49))


def test_largest_allowed_values_still_load(tmp_path):
    from fasterseg.arch.schema import LIMITS

    assert LIMITS["cells"] == (1, 48) and LIMITS["ratio"] == (1, 24)
    d = _arch(ratio=24, n_cells=48, stem_ratio=24, num_classes=254)
    p = tmp_path / "a.json"
    p.write_text(json.dumps(d))
    a = load_arch(p)
    assert len(a.branches[0].cells) == 48 and a.num_classes == 254


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(tmp_path, token):
    raw = json.dumps(_arch()).replace('"ratio": 4', f'"ratio": {token}', 1)
    assert _load_error(tmp_path, None, raw).endswith(f"contains {token}, which is not a JSON number")
    raw = json.dumps(_arch()).replace('"provenance": {}', f'"provenance": {{"miou": {token}}}')
    assert "not a JSON number" in _load_error(tmp_path, None, raw)


def test_non_finite_provenance_from_dict():
    d = _arch(provenance={"rows": [{"miou": float("nan")}]})
    with pytest.raises(ArchError, match=r"provenance.rows\[0\].miou is not a finite number"):
        Arch.from_dict(d)
    with pytest.raises(ArchError, match="ratio must be an integer in 1..24, got nan"):
        Arch.from_dict(_arch(ratio=float("nan")))


def test_name_and_provenance_and_file_size_are_bounded(tmp_path):
    assert "name must be a printable string of 1..128 characters" in _load_error(
        tmp_path, _arch(name="x" * 129))
    assert "name must be a printable string" in _load_error(tmp_path, _arch(name="a\nb"))
    msg = _load_error(tmp_path, _arch(provenance={"blob": "x" * (1 << 20)}))
    assert "provenance is" in msg and "at most 1048576" in msg
    big = json.dumps(_arch()) + " " * (5 << 20)
    assert "at most 4 MiB" in _load_error(tmp_path, None, big)


def test_with_num_classes_is_bounded():
    a = Arch.from_dict(_arch())
    assert a.with_num_classes(254).num_classes == 254
    with pytest.raises(ArchError, match=r"num_classes must be an integer in 1\.\.254, got 1000"):
        a.with_num_classes(1000)


def test_cli_prints_one_line_not_a_backtrace(tmp_path, capsys):
    d = _arch()
    d["branches"][0]["cells"][1]["ratio"] = d["head_ratio"] = 10**30
    p = tmp_path / "huge.json"
    p.write_text(json.dumps(d))
    rc = main(["info", str(p)])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err and "c10" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "head_ratio must be an integer in 1..24" in lines[0]


def test_number_too_long_to_parse_is_one_line(tmp_path):
    raw = json.dumps(_arch()).replace('"ratio": 4', '"ratio": ' + "9" * 5000, 1)
    assert "holds an unreadable value" in _load_error(tmp_path, None, raw)
    with pytest.raises(ArchError, match="got an integer of about 6000 digits"):
        Arch.from_dict(_arch(stem_ratio=10**6000))


@pytest.mark.parametrize("path,value,needle", [
    (("output_rate",), 10**40, "branches[0].output_rate must be an integer in 8..32"),
    (("cells", 0, "rate"), 10**40, "branches[0].cells[0].rate must be an integer in 8..32"),
    (("cells", 0, "stride"), -5, "branches[0].cells[0].stride must be an integer in 1..2"),
])  # fmt: skip
def test_rates_and_strides_are_bounded(path, value, needle):
    d = _arch()
    node = d["branches"][0]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ArchError) as e:
        Arch.from_dict(d)
    assert needle in str(e.value) and len(str(e.value)) < 200
