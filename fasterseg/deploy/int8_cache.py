"""The calibrated OpenVINO int8 model of a deploy choice, kept between starts.

Rebuilding an int8 choice (every ``predict --deploy``) would calibrate again: minutes at
1024x2048. The IR is written to ``$FASTERSEG_CACHE/int8/`` under a key covering everything the
result depends on, and read back on the next start; a missing, stale or unreadable entry only
means calibrating again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from fasterseg.deploy.predictor import Predictor
from fasterseg.errors import UserError
from fasterseg.utils.io import cache_dir

logger = logging.getLogger(__name__)


def cache_path(model: nn.Module, choice: dict[str, Any], size: Sequence[int],
               keep: Sequence[str] | None) -> Path:
    """Where the calibrated OpenVINO int8 IR of this model, choice and size is kept.

    Calibrating is the slow part of rebuilding a choice (minutes at 1024x2048); the key covers
    everything the result depends on: the weights, the size, the calibration data and split,
    the fp32 layers, the agreement floor and the OpenVINO/NNCF versions."""
    from fasterseg.deploy.openvino import nncf_version, openvino_version

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    key = {"weights": h.hexdigest(), "size": [int(v) for v in size],
           "calibration": choice.get("calibration"), "fp32_nodes": list(keep or []) or None,
           "min_agreement": choice.get("min_agreement"),
           "versions": [openvino_version(), nncf_version()]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / "int8" / f"openvino-int8-{digest[:24]}.xml"


def load(name: str, model: nn.Module, choice: dict[str, Any], size: Sequence[int],
         keep: Sequence[str] | None, streams: int = 1) -> Predictor | None:
    if name != "openvino-int8":
        return None
    path = cache_path(model, choice, size, keep)
    info_file = path.with_suffix(".json")
    if not (path.is_file() and path.with_suffix(".bin").is_file() and info_file.is_file()):
        return None
    from fasterseg.deploy.openvino import load_ir

    try:
        info = json.loads(info_file.read_text())
        pred = load_ir(path, "int8", size, choice["threads"], {**info, "cached_ir": str(path)},
                       streams)
    except (UserError, OSError, ValueError) as e:
        logger.warning("ignoring the cached int8 model (%s); calibrating again", e)
        return None
    logger.info("openvino-int8: calibrated model reused from %s", path)
    return pred


def store(pred: Predictor, model: nn.Module, choice: dict[str, Any],
          size: Sequence[int], keep: Sequence[str] | None) -> None:
    """Keep the calibrated IR for the next start; a cache that cannot be written costs only
    time, so it is a warning."""
    from fasterseg.utils.io import json_dumps, write_json

    path = cache_path(model, choice, size, keep)
    try:
        pred.save(path)
        info = json.loads(json_dumps(dict(getattr(pred, "info", None) or {}), default=str))
        write_json(path.with_suffix(".json"), info)
    except (UserError, OSError) as e:
        logger.warning("could not keep the calibrated int8 model in %s: %s", path.parent, e)
