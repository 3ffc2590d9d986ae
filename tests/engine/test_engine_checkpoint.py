"""Checkpoints hold only plain types (weights_only loading) and restore RNG streams exactly."""

import random

import numpy as np
import pytest
import torch

from fasterseg.engine import checkpoint as C
from fasterseg.errors import UserError


def test_rng_capture_restore_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.randn(5)
    state = C.capture_rng_state()
    path = C.save_checkpoint({"rng": state, "model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    ck = torch.load(path, map_location="cpu", weights_only=True)  # must not need pickle
    assert ck["format"] == C.FORMAT and ck["epoch"] == 3
    C.restore_rng_state(ck["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_save_refuses_objects_that_need_pickle(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        C.save_checkpoint({"bad": object()}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        C.load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load"):
        C.load_checkpoint(junk)


def test_load_model_roundtrip_from_checkpoint(tmp_path):
    from fasterseg.models import create_model

    model = create_model("fasterseg_student", num_classes=5).eval()
    path = C.save_checkpoint(
        {"model": model.state_dict(), "arch": C.arch_to_dict(model.arch), "num_classes": 5},
        tmp_path / "m.pt",
    )
    loaded, info = C.load_model(str(path))
    assert info["source"] == "checkpoint" and info["num_classes"] == 5
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(UserError, match="classes"):
        C.load_model(str(path), num_classes=7)


def test_resume_state_needs_last_pt_of_the_right_kind(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        C.load_resume_state(tmp_path, "search")
    C.save_checkpoint({"format": C.FORMAT, "model": {}, "kind": "fasterseg-search"}, tmp_path / "last.pt")
    assert C.load_resume_state(tmp_path, "search")["kind"] == "fasterseg-search"
    assert C.load_resume_state(tmp_path)["model"] == {}
    with pytest.raises(UserError, match="not a train checkpoint"):
        C.load_resume_state(tmp_path, "train")
