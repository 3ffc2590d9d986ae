import numpy as np
import pytest
import torch

from fasterseg.data.labels import CITYSCAPES_PALETTE
from fasterseg.data.transforms import (
    EvalTransform,
    TrainTransform,
    denormalize,
    downsample_pair,
    resize_label,
)

PAL = np.array(CITYSCAPES_PALETTE[:6], np.uint8)


def blocks(h=60, w=100, seed=0):
    """Label of big blocks, image = palette colour of the label: alignment is checkable."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, (h // 10 + 1, w // 10 + 1))
    lab = np.kron(coarse, np.ones((10, 10), int))[:h, :w].astype(np.uint8)
    return PAL[lab], lab


def agreement(img_t, lab_t, tf):
    """Fraction of non-ignored pixels whose colour is nearest to its label's palette colour."""
    img = denormalize(img_t, tf.mean, tf.std).astype(np.int32)
    lab = lab_t.numpy().astype(np.int64)
    d = ((img[:, :, None, :] - PAL[None, None].astype(np.int32)) ** 2).sum(-1)
    nearest = d.argmin(-1)
    # Away from label edges (2 px), where bilinear image blending cannot blur colours.
    m = lab != 255
    p = np.pad(lab, 2, mode="edge")
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            m &= p[2 + dy : 2 + dy + lab.shape[0], 2 + dx : 2 + dx + lab.shape[1]] == lab
    return (nearest[m] == lab[m]).mean(), m


@pytest.mark.parametrize("seed", range(6))
def test_scale_crop_flip_keep_alignment(seed):
    img, lab = blocks(seed=seed)
    tf = TrainTransform(crop_size=(48, 64), scales=(0.5, 0.75, 1.0, 1.5, 2.0), flip=True)
    x, y = tf(img, lab, np.random.default_rng(seed))
    assert x.shape == (3, 48, 64) and y.shape == (48, 64) and y.dtype == torch.long
    acc, m = agreement(x, y, tf)
    assert m.sum() > 100 and acc > 0.99
    # No sub-block misalignment either: shifting the label by one pixel only makes it worse.
    full = agreement_all(x, y, tf)
    for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        assert full > agreement_all(x, torch.roll(y, shift, (0, 1)), tf)


def agreement_all(img_t, lab_t, tf):
    img = denormalize(img_t, tf.mean, tf.std).astype(np.int32)
    lab = lab_t.numpy()[2:-2, 2:-2]
    nearest = ((img[:, :, None, :] - PAL[None, None].astype(np.int32)) ** 2).sum(-1).argmin(-1)
    m = lab != 255
    return (nearest[2:-2, 2:-2][m] == lab[m]).mean()


def test_flip_mirrors_both():
    img, lab = blocks()
    tf = TrainTransform(crop_size=(60, 100), scales=(1.0,), flip=True)
    outs = {}
    for s in range(20):  # find a flipped and a non-flipped draw with the same crop (no crop room)
        x, y = tf(img, lab, np.random.default_rng(s))
        outs[bool((y.numpy() == lab).all())] = (x, y)
    assert set(outs) == {True, False}
    assert (outs[False][1].numpy() == lab[:, ::-1]).all()
    assert torch.equal(outs[False][0], outs[True][0].flip(-1))


def test_ignore_padding_when_crop_is_larger():
    img, lab = blocks(20, 30)
    tf = TrainTransform(crop_size=(40, 50), scales=(1.0,), flip=False)
    x, y = tf(img, lab, np.random.default_rng(0))
    valid = y != 255
    assert valid.sum() == 20 * 30
    assert (x[:, ~valid] == 0).all()  # image padded with 0 after normalisation
    rows, cols = torch.nonzero(valid, as_tuple=True)
    assert rows.max() - rows.min() == 19 and cols.max() - cols.min() == 29


def test_label_downsample_and_downsample():
    img, lab = blocks(64, 128)
    tf = TrainTransform(crop_size=(32, 64), scales=(1.0,), flip=False, downsample=2,
                        label_downsample=8)  # fmt: skip
    x, y = tf(img, lab, np.random.default_rng(1))
    assert x.shape == (3, 32, 64) and y.shape == (4, 8)
    ev = EvalTransform(downsample=2)
    x, y = ev(img, lab)
    assert x.shape == (3, 32, 64) and y.shape == (32, 64)
    assert (y.numpy() == lab[1::2, 1::2]).all()  # nearest at pixel centres
    i2, l2 = downsample_pair(np.zeros((33, 65, 3), np.uint8), np.zeros((33, 65), np.uint8), 2)
    assert i2.shape == (16, 32, 3) and l2.shape == (16, 32)


def test_resize_label_is_nearest():
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    big = resize_label(lab, (4, 4))
    assert set(np.unique(big)) == {0, 1, 2, 3} and (big[:2, :2] == 0).all()


def test_same_seed_same_augmentation_and_jitter_range():
    img, lab = blocks()
    tf = TrainTransform(crop_size=(32, 48), scale_range=(0.6, 1.4), jitter=0.4)
    a = tf(img, lab, np.random.default_rng(7))
    b = tf(img, lab, np.random.default_rng(7))
    c = tf(img, lab, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
