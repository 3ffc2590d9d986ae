"""Synthetic latency tables: every block of a small space with deterministic fake timings."""

import hashlib

import pytest

from fasterseg.config.core import to_dict
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.latency.build import space_blocks
from fasterseg.latency.table import LatencyTable

SIZE = (64, 128)


def fake_ms(key: str, macs: int) -> float:
    """Positive, key-dependent, not proportional to anything (catches mixed-up lookups)."""
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return round(0.05 + macs / 2e8 + h, 6)


def make_table(space: SearchSpaceConfig, size=SIZE, num_classes: int = 19, **meta) -> LatencyTable:
    entries = {b.key: fake_ms(b.key, b.macs) for b in space_blocks(space, size, num_classes)}
    m = {"backend": "torch", "device": "cpu", "dtype": "fp32", "threads": 1, "batch": 1,
         "input_size": list(size), "num_classes": num_classes, "space": to_dict(space)}
    m.update(meta)
    return LatencyTable(entries, m)


@pytest.fixture
def tiny_space() -> SearchSpaceConfig:
    return SearchSpaceConfig(num_layers=4, ratios=[4, 8], teacher_stem_ratio=8,
                             teacher_head_ratio=8, student_stem_ratio=4, student_head_ratio=8)


@pytest.fixture
def tiny_table(tiny_space) -> LatencyTable:
    return make_table(tiny_space)
