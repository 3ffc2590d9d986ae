"""The block walk of an Arch must list exactly what the derived network runs."""

import pytest
import torch

from fasterseg.arch.sample import sample_archs
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.latency.model import discrete_latency, latency_breakdown
from fasterseg.latency.signature import arch_blocks
from fasterseg.models import build_model, create_model
from fasterseg.utils.complexity import count_macs

CONVS = {"conv": 1, "conv_x2": 2, "zoomed_conv": 1, "zoomed_conv_x2": 2, "conv_norm": 1,
         "refine": 1, "fusion": 1, "head": 2, "resize": 0}


def _block_convs(blocks) -> int:
    n = 0
    for _, b in blocks:
        if b.kind == "skip":
            n += 2 if b.stride == 2 else int(b.c_in != b.c_out)
        else:
            n += CONVS[b.kind]
    return n


def _conv_calls(model, size) -> int:
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    return len(calls)


def _models():
    space = SearchSpaceConfig()  # the paper's space
    archs = sample_archs(space, 6, seed=3, allow_skip=True)
    return [create_model("fasterseg_student").arch, create_model("fasterseg_teacher").arch, *archs]


@pytest.mark.parametrize("arch", _models(), ids=lambda a: a.name)
def test_blocks_match_the_network(arch):
    size = (64, 128)
    model = build_model(arch)
    blocks = arch_blocks(arch, size)
    macs = sum(b.macs for _, b in blocks if b.kind != "resize")
    assert macs == count_macs(model, size)[0]
    assert _block_convs(blocks) == _conv_calls(model, size)


def test_shared_cells_are_listed_once():
    arch = create_model("fasterseg_student").arch
    n_shared = arch.shared_prefix()
    assert n_shared == 3
    cells = [b for part, b in arch_blocks(arch, (64, 128)) if part == "cells"]
    assert len(cells) == sum(len(b.cells) for b in arch.branches) - n_shared


def test_discrete_latency_is_the_sum_of_entries(tiny_space, tiny_table):
    for arch in sample_archs(tiny_space, 5, seed=1):
        keys = [b.key for _, b in arch_blocks(arch, (64, 128))]
        expected = sum(tiny_table[k] for k in keys)
        assert discrete_latency(arch, tiny_table) == pytest.approx(expected, rel=1e-12)
        parts = latency_breakdown(arch, tiny_table)
        assert parts["stem"] > 0 and parts["cells"] > 0 and parts["decoder"] > 0
        assert parts["total"] == pytest.approx(expected, rel=1e-12)


def test_samples_are_valid_and_varied(tiny_space):
    archs = sample_archs(tiny_space, 20, seed=0)
    assert len({a.to_json() for a in archs}) == 20
    for a in archs:
        assert len(a.branches) == tiny_space.num_branches
        assert all(c.op != "skip" for b in a.branches for c in b.cells)
        assert a.stem_ratio == tiny_space.student_stem_ratio
    assert any(a.shared_prefix() > 0 for a in archs)
