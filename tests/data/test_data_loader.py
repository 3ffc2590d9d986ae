import pytest
import torch

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset, build_eval_loader, build_train_loader
from fasterseg.data.loader import epoch_order
from fasterseg.errors import UserError

CFG = DataConfig(synthetic_size=(32, 64), synthetic_train=5, synthetic_val=5, crop_size=(24, 40),
                 scale_range=(0.5, 1.5), jitter=0.3, workers=0)  # fmt: skip


def batches(ds, **kw):
    kw.setdefault("workers", 0)
    return list(build_train_loader(ds, 3, 4, **kw))


def same(a, b):
    return (
        len(a) == len(b)
        and all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
        and all(torch.equal(x["label"], y["label"]) for x, y in zip(a, b))
        and all(x["name"] == y["name"] for x, y in zip(a, b))
    )


@pytest.fixture(scope="module")
def ds():
    return build_dataset(CFG, "train", train=True)


def test_exact_length_and_shapes(ds):
    out = batches(ds, seed=0, epoch=0)
    assert len(out) == 4 and len(build_train_loader(ds, 3, 4, seed=0, epoch=0)) == 4
    assert out[0]["image"].shape == (3, 3, 24, 40) and out[0]["label"].shape == (3, 24, 40)
    assert len(out[0]["name"]) == 3
    names = [n for b in out for n in b["name"]]
    # 12 positions over 5 samples: every sample appears 2 or 3 times (repeated permutations).
    counts = {n: names.count(n) for n in set(names)}
    assert len(counts) == 5 and set(counts.values()) <= {2, 3}


def test_order_is_a_function_of_seed_and_epoch(ds):
    a = batches(ds, seed=1, epoch=2)
    assert same(a, batches(ds, seed=1, epoch=2))
    assert not same(a, batches(ds, seed=1, epoch=3))
    assert not same(a, batches(ds, seed=2, epoch=2))


def test_resume_with_start_iter_gives_the_remaining_batches(ds):
    full = batches(ds, seed=5, epoch=1)
    for k in (1, 3, 4):
        assert same(full[k:], batches(ds, seed=5, epoch=1, start_iter=k))


def test_same_batches_with_worker_processes(ds):
    assert same(batches(ds, seed=3, epoch=0), batches(ds, seed=3, epoch=0, workers=2))


def test_distributed_ranks_are_disjoint_and_deterministic():
    ds = build_dataset(CFG, "train", train=True)
    def names(rank):
        loader = build_train_loader(ds, 2, 3, seed=0, epoch=0, rank=rank, world_size=2)
        return [n for b in loader for n in b["name"]]

    r0, r1 = names(0), names(1)
    order, _ = epoch_order(len(ds), 12, seed=0, epoch=0)
    assert r0 == [ds.names[i] for i in order[0::2]] and r1 == [ds.names[i] for i in order[1::2]]
    with pytest.raises(UserError, match="not initialised"):
        build_train_loader(ds, 2, 3, seed=0, epoch=0, distributed=True)


def test_eval_loader_in_order_and_sharded():
    ev = build_dataset(CFG, "val", train=False)
    names = [b["name"][0] for b in build_eval_loader(ev, workers=0)]
    assert names == ev.names
    b = next(iter(build_eval_loader(ev, workers=0)))
    assert b["image"].shape == (1, 3, 32, 64) and b["label"].shape == (1, 32, 64)
    s0 = [b["name"][0] for b in build_eval_loader(ev, workers=0, rank=0, world_size=2)]
    s1 = [b["name"][0] for b in build_eval_loader(ev, workers=0, rank=1, world_size=2)]
    assert sorted(s0 + s1) == sorted(ev.names) and not set(s0) & set(s1)


def test_worker_error_is_one_clear_line(camvid_root):
    (camvid_root / "train" / "0001TP_000001.png").write_bytes(b"not a png")
    cfg = DataConfig(preset="camvid", root=str(camvid_root), crop_size=(16, 16))
    ds = build_dataset(cfg, "train", train=True)
    with pytest.raises(UserError) as e:
        list(build_train_loader(ds, 1, 6, seed=0, epoch=0, workers=1))
    msg = str(e.value)
    assert "0001TP_000001.png" in msg and "\n" not in msg and "Traceback" not in msg
