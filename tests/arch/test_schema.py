import json

import pytest

from fasterseg.arch import SCHEMA_ID, Arch, load_arch
from fasterseg.arch.schema import ArchError
from fasterseg.models import resolve_arch


def _tiny() -> dict:
    return {
        "schema": SCHEMA_ID,
        "name": "tiny",
        "num_classes": 5,
        "stem_ratio": 4,
        "head_ratio": 4,
        "branches": [
            {"output_rate": 16, "cells": [
                {"op": "conv", "rate": 8, "stride": 1, "ratio": 4},
                {"op": "zoomed_conv", "rate": 8, "stride": 2, "ratio": 4},
            ]},
            {"output_rate": 8, "cells": [
                {"op": "conv", "rate": 8, "stride": 1, "ratio": 4},
                {"op": "conv_x2", "rate": 8, "stride": 1, "ratio": 4},
            ]},
        ],
        "provenance": {"source": "test"},
    }


def test_round_trip(tmp_path):
    a = Arch.from_dict(_tiny())
    p = a.save(tmp_path / "a.json")
    b = load_arch(p)
    assert a == b and b.to_dict() == a.to_dict()
    assert json.loads(p.read_text())["schema"] == SCHEMA_ID
    assert a.shared_prefix() == 1


@pytest.mark.parametrize("name", ["fasterseg_student", "fasterseg_teacher"])
def test_published_round_trip(name, tmp_path):
    a = resolve_arch(name)
    assert load_arch(a.save(tmp_path / "x.json")) == a


def test_published_student_matches_paper_table7():
    a = resolve_arch("fasterseg_student")
    b32, b16 = a.branches
    assert [b.output_rate for b in a.branches] == [32, 16]
    assert [c.out_channels for c in b16.cells[:-1]] == [32, 32, 32, 32, 32, 64, 64, 192]
    assert [c.op for c in b32.cells] == ["conv_x2", "conv_x2", "zoomed_conv_x2", "zoomed_conv"] + [
        "zoomed_conv_x2"] * 6
    assert a.shared_prefix() == 3
    assert resolve_arch("fasterseg_teacher").shared_prefix() == 4


def _mutate(path, value):
    d = _tiny()
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize(
    "path,value,needle",
    [
        (["schema"], "fasterseg.arch/9", "unsupported schema"),
        (["schema"], KeyError, "missing field schema"),
        (["num_classes"], 0, "num_classes"),
        (["stem_ratio"], "8", "stem_ratio"),
        (["head_ratio"], KeyError, "missing field head_ratio"),
        (["branches"], [], "branches must be a non-empty list"),
        (["branches", 0, "output_rate"], 64, "branches[0].output_rate"),
        (["branches", 0, "output_rate"], 32, "branches[0].output_rate is 32"),
        (["branches", 0, "cells", 1, "op"], "dilated", "branches[0].cells[1].op"),
        (["branches", 0, "cells", 1, "rate"], 16, "branches[0].cells[1].rate"),
        (["branches", 0, "cells", 1, "stride"], 3, "branches[0].cells[1].stride"),
        (["branches", 0, "cells", 1, "ratio"], 6, "branches[0].cells[1].ratio must equal head_ratio"),
        (["branches", 1, "output_rate"], 16, "branches[1].output_rate"),
        (["branches", 0, "cells", 0, "kernel"], 3, "unknown field branches[0].cells[0].kernel"),
        (["extra"], 1, "unknown field extra"),
    ],
)
def test_validation_errors_name_the_field(path, value, needle, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(_mutate(path, value)))
    with pytest.raises(ArchError) as e:
        load_arch(p)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_invalid_json_and_missing_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        load_arch(p)
    with pytest.raises(Exception, match="not found"):
        load_arch(tmp_path / "missing.json")
