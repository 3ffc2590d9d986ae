import pytest
import torch

from fasterseg.arch.sample import sample_archs
from fasterseg.bench.fuse import fuse_conv_bn
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.models import build_model, create_model


def _randomise_bn(model):
    """Non-trivial BN statistics so that folding actually changes the weights."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("which", ["student", "skips"])
def test_fused_model_matches_and_has_no_bn(which):
    if which == "student":
        model = create_model("fasterseg_student")
    else:  # samples with stride-2 skips (factorized reduce: one BN over two convs)
        space = SearchSpaceConfig(num_layers=5, ratios=[4, 8], operators=["skip", "conv"])
        arch = next(a for a in sample_archs(space, 40, seed=0, allow_skip=True)
                    if any(c.op == "skip" and c.stride == 2 for b in a.branches for c in b.cells))
        model = build_model(arch)
    model = _randomise_bn(model).eval()
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.randn(1, 3, 64, 128)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
    assert torch.allclose(ref, out, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
