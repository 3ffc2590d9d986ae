"""Shared fixtures of the search tests: the tiny search config and a synthetic latency table."""

import json
from pathlib import Path

import pytest
import torch

from fasterseg.config.core import from_dict

TINY = {
    "data": {"preset": "synthetic", "synthetic_size": [64, 128], "synthetic_train": 8,
             "synthetic_val": 1, "downsample": 1, "scales": [1.0], "workers": 0},
    "space": {"num_layers": 4, "ratios": [4, 8], "teacher_stem_ratio": 8, "teacher_head_ratio": 8},
    "search": {"pretrain_epochs": 1, "search_epochs": 1, "iters_per_epoch": 2,
               "pretrain_crop_size": [64, 128], "crop_size": [64, 128], "pretrain_batch_size": 2,
               "batch_size": 2, "sandwich_random": 1, "eval_every": 1, "val_max_images": 1,
               "log_every": 1, "seed": 0, "deterministic": True, "latency_weight": 0.01},
}


@pytest.fixture(scope="session")  # a pure factory: module-scoped fixtures can use it too
def tiny_cfg():
    """``make(**search_overrides) -> SearchRunConfig`` of the tiny search (L=4, 64x128)."""
    from fasterseg.config.search import SearchRunConfig

    def make(**search):
        d = json.loads(json.dumps(TINY))
        d["search"].update(search)
        return from_dict(SearchRunConfig, d)

    return make


@pytest.fixture(scope="session")
def lut(tmp_path_factory) -> Path:
    """A latency table of the tiny space with random entries (device cpu)."""
    from fasterseg.config.search import SearchRunConfig
    from fasterseg.latency import LatencyTable
    from fasterseg.latency.build import space_blocks

    space = from_dict(SearchRunConfig, json.loads(json.dumps(TINY))).space
    g = torch.Generator().manual_seed(0)
    entries = {b.key: 0.05 + float(torch.rand((), generator=g)) for b in space_blocks(space, (256, 512))}
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    LatencyTable(entries, {"input_size": [256, 512], "device": "cpu"}).save(path)
    return path
