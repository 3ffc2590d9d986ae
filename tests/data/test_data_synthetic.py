import numpy as np
import torch

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset, generate_scene
from fasterseg.data.synthetic import CAR, PERSON, POLE, ROAD, SIGN, SKY


def test_deterministic_by_seed_split_index():
    a = generate_scene(3, "train", 5, (64, 128))
    b = generate_scene(3, "train", 5, (64, 128))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for other in ((4, "train", 5), (3, "val", 5), (3, "train", 6)):
        c = generate_scene(*other, (64, 128))
        assert not np.array_equal(a[0], c[0])


def test_any_size_and_valid_labels():
    for size in ((8, 8), (37, 91), (96, 192)):
        img, lab = generate_scene(0, "train", 0, size)
        assert img.shape == (*size, 3) and img.dtype == np.uint8 and lab.shape == size
        assert ((lab < 11) | (lab == 255)).all()


def test_scenes_are_varied_and_contain_thin_classes():
    counts = np.zeros(256, np.int64)
    means = []
    for i in range(12):
        img, lab = generate_scene(0, "train", i, (128, 256))
        counts += np.bincount(lab.ravel(), minlength=256)
        means.append(img.reshape(-1, 3).mean(0))
    present = counts[:11] > 0
    assert present.all(), np.nonzero(~present)
    for c in (POLE, SIGN, PERSON):  # thin / small classes: present but rare
        assert 0 < counts[c] < 0.03 * counts.sum()
    assert counts[ROAD] > counts[CAR] > 0 and counts[SKY] > 0
    assert np.std(np.array(means), axis=0).mean() > 3  # lighting/colour differ per scene


def test_colour_alone_is_not_enough():
    """Texture and per-scene colours: a class's colour varies across scenes and within one."""
    stds = []
    for i in range(6):
        img, lab = generate_scene(1, "train", i, (128, 256))
        road = img[lab == ROAD].astype(np.float32)
        stds.append(road.std(0).mean())
    assert min(stds) > 2


def test_synthetic_dataset_split_sizes_and_names():
    cfg = DataConfig(
        synthetic_size=(48, 96), synthetic_train=5, synthetic_val=3, crop_size=(32, 64)
    )
    tr, va = build_dataset(cfg, "train", True), build_dataset(cfg, "val", False)
    assert len(tr) == 5 and len(va) == 3 and tr.label_set.num_classes == 11
    s = va[2]
    assert s["name"] == "synth_00002" and s["image"].shape == (3, 48, 96)
    img, lab = generate_scene(cfg.synthetic_seed, "val", 2, (48, 96))
    assert torch.equal(s["label"], torch.from_numpy(lab).long())
    assert tr[(0, 1)]["image"].shape == (3, 32, 64)
