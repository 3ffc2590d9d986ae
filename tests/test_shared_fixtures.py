"""The shared test fixtures of tests/conftest.py: one tiny architecture, never copied around."""

from __future__ import annotations

from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def test_tiny_arch_builds_a_network_that_needs_64_px(tiny_arch):
    from fasterseg.models import build_model

    model = build_model(tiny_arch()).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    assert build_model(tiny_arch(num_classes=5)).num_classes == 5


def test_tiny_arch_is_a_fresh_copy_each_time(tiny_arch):
    a = tiny_arch()
    a["branches"][0]["cells"].clear()
    a["num_classes"] = 7
    b = tiny_arch()
    assert len(b["branches"][0]["cells"]) == 3 and b["num_classes"] == 3


def test_the_tiny_arch_is_defined_once():
    # these files each kept a copy of the same dict; they use the tiny_arch fixture now
    users = ["cli/test_safety_eval_predict.py", "cli/test_predict_stream.py", "deploy/test_int8.py"]
    for name in users:
        text = (TESTS / name).read_text()
        assert '"name": "tiny32"' not in text, name
        assert "tiny_arch()" in text, name
