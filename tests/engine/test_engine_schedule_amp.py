"""The per-step lr schedules (poly/cosine end near 0, warm-up, exp = paper) and train.amp=auto."""

from __future__ import annotations

import json

import pytest
import torch

from fasterseg.config.train import TrainConfig
from fasterseg.engine import amp as amp_mod
from fasterseg.engine.schedule import lr_at
from fasterseg.errors import UserError


def _tc(**kw) -> TrainConfig:
    tc = TrainConfig(epochs=10, iters_per_epoch=20, lr=0.05, **kw)
    tc.validate()
    return tc


@pytest.mark.parametrize("kind", ["poly", "cosine"])
def test_decaying_schedules_end_near_zero(kind):
    tc = _tc(lr_schedule=kind)
    total = tc.epochs * tc.iters_per_epoch
    assert lr_at(tc, 0) == pytest.approx(0.05)
    assert lr_at(tc, total - 1) < 0.01 * tc.lr
    lrs = [lr_at(tc, s) for s in range(total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone


def test_poly_min_lr_and_warmup():
    tc = _tc(lr_schedule="poly", min_lr=1e-4, warmup_iters=10, warmup_ratio=0.1)
    assert lr_at(tc, 0) == pytest.approx(0.1 * tc.lr, rel=1e-3)
    assert lr_at(tc, 5) < lr_at(tc, 9) < lr_at(tc, 10) * 1.01
    assert lr_at(tc, 200) == pytest.approx(1e-4)


def test_exp_is_the_paper_schedule_per_epoch():
    tc = _tc(lr_schedule="exp", lr_decay=0.992)
    assert lr_at(tc, 0) == lr_at(tc, 19) == pytest.approx(0.05)
    assert lr_at(tc, 20) == pytest.approx(0.05 * 0.992)


@pytest.mark.parametrize("bad", [{"lr_schedule": "step"}, {"amp": "int8"}, {"min_lr": 1.0},
                                 {"warmup_ratio": 0.0}])
def test_bad_schedule_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        TrainConfig(**bad).validate()


def test_amp_auto_picks_a_valid_mode_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTERSEG_CACHE", str(tmp_path))
    calls = []
    real = amp_mod.measure_cpu_amp

    def counted(reps: int = 5):
        calls.append(1)
        return real(reps=2)

    monkeypatch.setattr(amp_mod, "measure_cpu_amp", counted)
    first = amp_mod.resolve_amp("auto", torch.device("cpu"))
    assert first in ("off", "bf16")
    cache = json.loads((tmp_path / "amp_choice.json").read_text())
    (entry,) = cache.values()
    assert entry["choice"] == first and entry["fp32_s"] > 0 and entry["bf16_s"] > 0
    assert amp_mod.resolve_amp("auto", torch.device("cpu")) == first
    assert len(calls) == 1  # measured once, then read from the cache
    assert amp_mod.resolve_amp("off", torch.device("cpu")) == "off"


def test_amp_auto_chooses_bf16_only_when_clearly_faster(monkeypatch):
    monkeypatch.setattr(amp_mod, "_time_step", lambda amp, reps: 1.0 if amp == "off" else 0.5)
    assert amp_mod.measure_cpu_amp()["choice"] == "bf16"
    monkeypatch.setattr(amp_mod, "_time_step", lambda amp, reps: 1.0 if amp == "off" else 0.95)
    assert amp_mod.measure_cpu_amp()["choice"] == "off"
