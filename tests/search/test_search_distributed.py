"""`search` under torchrun: 2 gloo processes keep supernet weights and arch parameters identical."""

import pytest
import torch

pytestmark = [pytest.mark.dist, pytest.mark.slow]

SCRIPT = r'''
import os, sys, torch
torch.set_num_threads(1)
from fasterseg.config.core import from_dict
from fasterseg.config.search import SearchRunConfig
from fasterseg.engine.search_loop import search

out = sys.argv[1]
cfg = from_dict(SearchRunConfig, {
    "data": {"preset": "synthetic", "synthetic_size": [64, 128], "synthetic_train": 8,
             "synthetic_val": 2, "downsample": 1, "scales": [1.0], "workers": 0},
    "space": {"num_layers": 3, "ratios": [4, 8], "teacher_stem_ratio": 8, "teacher_head_ratio": 8},
    "search": {"pretrain_epochs": 1, "search_epochs": 1, "iters_per_epoch": 2,
               "pretrain_crop_size": [64, 128], "crop_size": [64, 128], "pretrain_batch_size": 2,
               "batch_size": 2, "sandwich_random": 1, "eval_every": 1, "val_max_images": 2,
               "log_every": 1, "seed": 0, "latency_weight": 0.0},
})
res = search(cfg, out + "/run", device="cpu")
rank = int(os.environ["RANK"])
weights = torch.cat([p.detach().flatten() for p in res.model.weight_parameters()])
arch = torch.cat([p.detach().flatten() for p in res.model.arch_parameters()])
torch.save({"weights": weights, "arch": arch, "step": res.step}, f"{out}/rank{rank}.pt")
'''


def test_two_process_search_keeps_ranks_in_sync(tmp_path, torchrun):
    torchrun(SCRIPT, timeout=300)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 4
    assert torch.equal(r0["weights"], r1["weights"]), "supernet weights diverged across ranks"
    assert torch.equal(r0["arch"], r1["arch"]), "architecture parameters diverged across ranks"
    assert (tmp_path / "run" / "arch_params.json").is_file()  # rank 0 wrote the run
