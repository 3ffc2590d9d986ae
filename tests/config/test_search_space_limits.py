"""The search space is bounded like the architecture file its nets are derived into."""

from __future__ import annotations

import pytest

from fasterseg.arch import schema
from fasterseg.config.core import from_dict
from fasterseg.config.search_space import LIMITS, SearchSpaceConfig
from fasterseg.errors import UserError


def _space(**kw) -> SearchSpaceConfig:
    return from_dict(SearchSpaceConfig, kw, "space")


def test_schema_and_space_share_one_set_of_limits():
    assert schema.LIMITS is LIMITS


@pytest.mark.parametrize("field, value", [
    ("num_layers", LIMITS["cells"][1] + 1),
    ("ratios", [4, LIMITS["ratio"][1] + 1]),
    ("ratios", [0, 4]),
    ("teacher_stem_ratio", LIMITS["stem_ratio"][1] + 1),
    ("teacher_head_ratio", LIMITS["head_ratio"][1] + 1),
    ("student_stem_ratio", 0),
    ("student_head_ratio", 2000),
    ("rates", [8, 16, 32, 64]),
    ("rates", []),
])
def test_out_of_range_space_is_one_line_naming_the_field(field, value):
    with pytest.raises(UserError) as e:
        _space(**{field: value})
    msg = str(e.value)
    assert f"space.{field}" in msg and "\n" not in msg


def test_the_largest_allowed_space_is_accepted():
    hi = LIMITS["ratio"][1]
    s = _space(num_layers=LIMITS["cells"][1], ratios=[1, hi], teacher_stem_ratio=hi,
               teacher_head_ratio=hi, student_stem_ratio=1, student_head_ratio=1)
    assert s.num_layers == 48 and s.max_ratio == 24
