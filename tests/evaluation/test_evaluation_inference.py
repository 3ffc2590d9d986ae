"""Inference on sizes not divisible by 32: padding, flip, scales and sliding window line up."""

import pytest
import torch

from fasterseg.evaluation import infer_image, pad_to_multiple


class PixelModel(torch.nn.Module):
    """Per-pixel 1x1 conv that insists on /32 sizes, like the real network."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, classes, 1)

    def forward(self, x):
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        return self.conv(x)


def test_pad_to_multiple():
    x, size = pad_to_multiple(torch.ones(1, 3, 33, 70))
    assert x.shape[-2:] == (64, 96) and size == (33, 70)
    assert x[..., 33:, :].abs().sum() == 0 and x[..., :, 70:].abs().sum() == 0


@pytest.mark.parametrize("flip", [False, True])
def test_padding_and_crop_back_match_direct_per_pixel_result(flip):
    model = PixelModel().eval()
    img = torch.randn(3, 45, 77)
    probs = infer_image(model, img, flip=flip)
    assert probs.shape == (4, 45, 77)
    expected = model.conv(img.unsqueeze(0)).softmax(1)[0]  # per-pixel model: padding must not matter
    assert torch.allclose(probs, expected, atol=1e-5)
    assert torch.allclose(probs.sum(0), torch.ones(45, 77), atol=1e-5)


def test_sliding_window_and_scales_keep_the_input_size():
    model = PixelModel().eval()
    img = torch.randn(3, 100, 150)
    probs = infer_image(model, img, window=(64, 64), num_classes=4)
    assert probs.shape == (4, 100, 150)
    expected = model.conv(img.unsqueeze(0)).softmax(1)[0]
    assert torch.allclose(probs, expected, atol=1e-5)  # overlaps average identical tiles
    ms = infer_image(model, img, scales=(0.75, 1.0, 1.25), flip=True)
    assert ms.shape == (4, 100, 150) and torch.allclose(ms.sum(0), torch.ones(100, 150), atol=1e-4)


def test_real_network_on_odd_size():
    from fasterseg.models import create_model

    model = create_model("fasterseg_student", num_classes=3).eval()
    probs = infer_image(model, torch.randn(3, 50, 70))
    assert probs.shape == (3, 50, 70) and torch.isfinite(probs).all()
