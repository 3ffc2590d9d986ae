"""``--auto``: measure every candidate path on this machine and keep the fastest accurate one.

The fastest path differs by machine (bf16 needs native bf16 instructions, int8 needs VNNI, ...)
and a fast path can be wrong (int8 calibrated on the wrong images), so each candidate is
(1) built (its preparation time recorded; a failure is a row of the table, not an error),
(2) checked: the share of pixels whose class (argmax) equals the eager fp32 model's, on held-out
images (a split of the model's dataset other than the calibration split; generated scenes, with
a warning, when no data is given), and (3) timed: warm-up until steady, then interleaved rounds
(so the load of other processes hits every candidate alike), median and IQR.
The fastest candidate whose agreement reaches ``min_agreement`` wins; eager fp32 is the reference
and always qualifies. The choice is a small JSON file that ``build_from_choice`` turns back into
the same path (calibrating again for int8), e.g. for ``predict --deploy CHOICE.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from fasterseg.deploy import int8_cache, paths
from fasterseg.deploy.calibration import check_image_count, tune_image_count
from fasterseg.deploy.choice_file import (  # noqa: F401  (the file's API, re-exported here)
    ROW_KEYS,
    SCHEMA,
    VERSION,
    choice_cache_dir,
    default_choice_path,
    format_table,
    load_choice,
    save_choice,
    validate_choice,
)
from fasterseg.deploy.predictor import Predictor
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

TUNE_IMAGES = 4  # calibration-split images the int8 path may tune its fp32 fallbacks on
# The fallback is tuned on a few calibration-split images, the verdict is taken on held-out ones:
# tune to a slightly higher floor so a path that just reaches it on the tuning images does not fall
# just short on the held-out ones (measured: 99.50 % tuned -> 99.46 % on CamVid val).
TUNE_MARGIN = 0.002


def _tune_floor(min_agreement: float) -> float:
    """The agreement the int8 fallback search aims for on its tuning images (see TUNE_MARGIN)."""
    return min(1.0, min_agreement + TUNE_MARGIN)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What makes a choice valid only here: CPU model and its speed flags (``fasterseg env``)."""
    from fasterseg.latency.backends import device_name
    from fasterseg.utils.environment import cpu_flags, cpu_name

    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
            "device_name": device_name(device)}


def versions() -> dict[str, str | None]:
    """Engine versions a choice depends on (torch, onnxruntime, openvino)."""
    from fasterseg import __version__
    from fasterseg.latency.backends import library_versions

    v: dict[str, str | None] = {"fasterseg": __version__, **library_versions()}
    v.setdefault("onnxruntime", None)
    try:
        from fasterseg.deploy.openvino import openvino_version

        v["openvino"] = openvino_version()
    except ImportError:
        v["openvino"] = None
    return v


def _images(spec: str | None, size: tuple[int, int], n: int, split: str) -> tuple[list, dict]:
    from fasterseg.deploy.calibration import calibration_images

    return calibration_images(spec, size, n, split=split)


def pixel_agreement(pred: Predictor, check: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]
               ) -> float:
    """Share of pixels over ``check`` whose argmax equals the reference classes ``ref``."""
    same = total = 0
    for x, r in zip(check, ref):
        cls = pred(x).argmax(1).to("cpu", torch.uint8)
        if cls.shape != r.shape:
            raise RuntimeError(f"output classes {tuple(cls.shape)} != reference {tuple(r.shape)}")
        same += int((cls == r).sum())
        total += r.numel()
    return same / total


def _jsonable(info: Any) -> dict[str, Any]:
    """A path's ``info`` as plain JSON types (engines may put numpy scalars or paths in it)."""
    from fasterseg.utils.io import json_dumps

    return json.loads(json_dumps(dict(info or {}), default=str))


def _stats(times: list[float]) -> dict[str, Any]:
    from fasterseg.bench.runner import percentile

    med = statistics.median(times)
    p25, p75 = percentile(times, 25), percentile(times, 75)
    return {"latency_ms": med, "fps": 1000.0 / med, "iqr_ms": p75 - p25, "p25_ms": p25,
            "p75_ms": p75, "min_ms": min(times), "runs": len(times)}


def _row(name: str) -> dict[str, Any]:
    backend, dtype = paths.CANDIDATES[name]
    return {"name": name, "backend": backend, "dtype": dtype, "latency_ms": None,
            "agreement": None, "rejected": None}


def choose_and_build(
    model: nn.Module,
    size: Sequence[int],
    *,
    threads: int | None = None,
    calib_spec: str | None = None,
    calibration_split: str = "train",
    check_split: str = "val",
    calibration_images: int = 8,
    check_images: int = 4,
    min_agreement: float = 0.995,
    seconds: float = 6.0,
    rounds: int = 3,
    candidates: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    tune_malloc: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], Predictor]:
    """Measure the candidates (module docstring) and return (choice dict, chosen Predictor).

    ``candidates``: names from ``paths.CANDIDATES`` (default: every one meant for ``device``;
    those not installed here are listed as rejected). ``seconds``: timed seconds per candidate,
    split over ``rounds`` interleaved rounds. ``progress``: called with one line per step.
    """
    from fasterseg.latency.backends import Runner, set_threads, time_for, warm_until_steady

    say = progress or (lambda line: logger.info(line))
    dev = torch.device(device)
    size = (int(size[0]), int(size[1]))
    if not 0.0 < min_agreement <= 1.0:
        raise UserError(f"--min-agreement must be in (0, 1], got {min_agreement}")
    if seconds <= 0 or rounds < 1:
        raise UserError("--seconds must be > 0 and rounds >= 1")
    if calibration_images < 1 or check_images < 1:
        raise UserError("--calibration-images and --check-images must be >= 1")
    if check_split == calibration_split:
        raise UserError(f"the check split must differ from the calibration split "
                        f"({calibration_split!r}): agreement is measured on held-out images")
    if candidates is None:
        names = [n for n in paths.CANDIDATES if paths.runs_on(n, dev)]
    else:
        names = list(dict.fromkeys(paths.check_name(n) for n in candidates))
    if paths.REFERENCE in names:
        names.remove(paths.REFERENCE)
    names.insert(0, paths.REFERENCE)
    threads_used = set_threads(threads) if dev.type == "cpu" else torch.get_num_threads()
    tuned = False
    if tune_malloc and dev.type == "cpu":
        from fasterseg.bench import tuning

        tuned = bool(tuning.tune_malloc())

    # Held-out images (and calibration images when a candidate needs them).
    check_images = check_image_count(calib_spec, check_split, check_images)
    check, check_info = _images(calib_spec or "synthetic", size, check_images, check_split)
    if calib_spec is None:
        logger.warning("no calibration data given: agreement is measured on generated street "
                       "scenes, not on images of the model's dataset (--calibration-data)")
    calib = tune = None
    calib_info: dict[str, Any] = {"split": calibration_split, "images": 0}
    if any(n in paths.NEEDS_CALIBRATION and paths.unavailable_reason(n, dev) is None
           for n in names):
        n_tune = tune_image_count(calib_spec, calibration_split, calibration_images,
                                  min(TUNE_IMAGES, check_images))
        imgs, calib_info = _images(calib_spec, size, calibration_images + n_tune,
                                   calibration_split)
        calib, tune = imgs[:calibration_images], (imgs[calibration_images:] or None)
        calib_info = {**calib_info, "images": len(calib), "tune_images": len(tune or [])}

    rows: list[dict[str, Any]] = []
    built: dict[str, Predictor] = {}
    ref: list[torch.Tensor] = []
    for name in names:
        row = _row(name)
        rows.append(row)
        why = paths.unavailable_reason(name, dev)
        if why is not None:
            row["rejected"] = f"unavailable: {why}"
            say(f"  {name:<18} unavailable: {why}")
            continue
        say(f"  {name:<18} building ...")
        t0 = time.perf_counter()
        try:
            pred = paths.build_candidate(name, model, size, threads=threads, calib=calib,
                                         check=tune, device=dev,
                                         min_agreement=_tune_floor(min_agreement))
            row.update(backend=pred.backend, dtype=pred.dtype)
            row["prepare_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            pred(check[0])  # first run: compilation, engine build, first allocation
            row["first_run_ms"] = (time.perf_counter() - t1) * 1e3
            if name == paths.REFERENCE:
                ref = [pred(x).argmax(1).to("cpu", torch.uint8) for x in check]
                row["agreement"] = 1.0
            else:
                row["agreement"] = pixel_agreement(pred, check, ref)
        except Exception as e:  # one failing engine must not stop the others
            if name == paths.REFERENCE:
                raise
            row["error"] = f"{type(e).__name__}: {_first_line(e)}"
            row["rejected"] = f"failed: {_first_line(e)}"
            say(f"  {name:<18} failed: {_first_line(e)}")
            logger.debug("candidate %s failed", name, exc_info=True)
            continue
        row["info"] = _jsonable(getattr(pred, "info", None))
        if row["agreement"] < min_agreement:
            row["rejected"] = f"agreement {row['agreement']:.4f} < {min_agreement:g}"
        built[name] = pred
        say(f"  {name:<18} built in {row['prepare_s']:.1f} s, agreement "
            f"{100 * row['agreement']:.2f}%")

    # Time every built candidate, interleaved, on a held-out image.
    runners = {}
    for name, pred in built.items():
        runners[name] = Runner(lambda p=pred: p(check[0]), dev, name)
    times: dict[str, list[float]] = {n: [] for n in runners}
    warm = min(2.0, seconds)
    for r in runners.values():
        warm_until_steady(r, max_seconds=warm)
    for _ in range(rounds):
        for n, r in runners.items():
            times[n] += time_for(r, seconds / rounds, min_reps=2)
    for row in rows:
        if row["name"] in times:
            row.update(_stats(times[row["name"]]))
    ok = [r for r in rows if r["name"] in built and r["rejected"] is None]
    best = min(ok, key=lambda r: r["latency_ms"])  # the reference is always in ok
    for row in rows:
        row["chosen"] = row is best
    choice = {
        "schema": SCHEMA,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "chosen": {k: best[k] for k in ("name", "backend", "dtype", "latency_ms", "agreement")},
        "size": list(size),
        "device": str(dev),
        "threads": threads_used,
        "min_agreement": min_agreement,
        "seconds": seconds,
        "malloc_tuned": tuned,
        "calibration": {"spec": calib_spec, **calib_info, "split": calibration_split},
        "check": {**check_info, "split": check_split, "images": len(check)},
        "machine": machine_info(dev),
        "versions": versions(),
        "candidates": rows,
    }
    return choice, built[best["name"]]


def build_checked(
    name: str,
    model: nn.Module,
    size: Sequence[int],
    *,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    calib_spec: str | None = None,
    calibration_split: str = "train",
    calibration_images: int = 8,
    check_split: str = "val",
    check_images: int = 4,
    min_agreement: float = 0.995,
) -> tuple[Predictor, dict[str, Any]]:
    """One named path (``bench --dtype int8``, ``--backend openvino``, ``export --format``),
    calibrated on ``calib_spec`` when it needs it, with its agreement with eager fp32 on
    ``check_images`` held-out images of ``check_split``. Returns (predictor, info)."""
    size = (int(size[0]), int(size[1]))
    if check_split == calibration_split:
        raise UserError("--check-split must differ from --calibration-split")
    if calibration_images < 1 or check_images < 1:
        raise UserError("--calibration-images and --check-images must be >= 1")
    model = model.eval()
    calib = tune = None
    info: dict[str, Any] = {"path": paths.check_name(name)}
    if name in paths.NEEDS_CALIBRATION:
        n_tune = tune_image_count(calib_spec, calibration_split, calibration_images,
                                  min(TUNE_IMAGES, check_images))
        imgs, cinfo = _images(calib_spec, size, calibration_images + n_tune, calibration_split)
        calib, tune = imgs[:calibration_images], (imgs[calibration_images:] or None)
        info.update(calibration={**cinfo, "spec": calib_spec, "images": len(calib),
                                 "tune_images": len(tune or [])},
                    calibration_images=len(calib))
    t0 = time.perf_counter()
    pred = paths.build_candidate(name, model, size, threads=threads, calib=calib, check=tune,
                                 device=device, min_agreement=_tune_floor(min_agreement))
    info["prepare_s"] = time.perf_counter() - t0
    check_images = check_image_count(calib_spec, check_split, check_images)
    check, kinfo = _images(calib_spec or "synthetic", size, check_images, check_split)
    with torch.inference_mode():
        ref = [model(x).argmax(1).to(torch.uint8) for x in check]  # fp32 eager, CPU
    info.update(agreement=pixel_agreement(pred, check, ref), check=kinfo,
                path_info=_jsonable(getattr(pred, "info", None)))
    return pred, info


def choose(model: nn.Module, size: Sequence[int], **kw: Any) -> dict[str, Any]:
    """``choose_and_build`` without the Predictor: the choice dict (table included)."""
    return choose_and_build(model, size, **kw)[0]


def machine_mismatch(choice: dict[str, Any], device: str | torch.device | None = None,
                     threads: int | None = None, size: Sequence[int] | None = None
                     ) -> str | None:
    """Why ``choice`` may not be the best here (other CPU/flags/device/threads/size), or None."""
    here = machine_info(device or choice["device"])
    there = choice["machine"]
    if device is not None and torch.device(device) != torch.device(choice["device"]):
        return f"it was measured on {choice['device']}, not {device}"
    if there.get("cpu") != here["cpu"] or there.get("cpu_flags") != here["cpu_flags"]:
        return f"it was measured on another CPU ({there.get('cpu')})"
    if (torch.device(choice["device"]).type == "cuda"
            and there.get("device_name") != here["device_name"]):
        return f"it was measured on another GPU ({there.get('device_name')})"
    if threads is not None and threads != choice["threads"]:
        return f"it was measured with {choice['threads']} threads, not {threads}"
    if size is not None and list(size) != choice["size"]:
        return f"it was measured at {choice['size'][0]}x{choice['size'][1]}"
    return None


def build_from_choice(
    model: nn.Module, choice: dict[str, Any], size: Sequence[int] | None = None,
    streams: int = 1,
) -> Predictor:
    """Rebuild the chosen path of ``choice`` for ``model`` (int8: calibrated again on the
    recorded calibration data, OpenVINO int8 once per cache). ``size`` defaults to the measured
    one; another size works but the choice may not be the fastest there (logged). ``streams``:
    OpenVINO paths are compiled for that many overlapping calls."""
    choice = validate_choice(choice)
    size = tuple(int(v) for v in (size or choice["size"]))
    why = machine_mismatch(choice, size=size)
    if why is not None:
        logger.warning("the deploy choice may not be the fastest here: %s "
                       "(run `fasterseg bench MODEL --auto` again)", why)
    name = choice["chosen"]["name"]
    dev = torch.device(choice["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"the deploy choice runs on {choice['device']} but CUDA is not available")
    if choice.get("malloc_tuned") and dev.type == "cpu":
        from fasterseg.bench import tuning

        tuning.tune_malloc()
    calib = tune = keep = None
    if name in paths.NEEDS_CALIBRATION:
        cal = choice["calibration"]
        n, n_tune = cal["images"], int(cal.get("tune_images") or 0)
        row = next((r for r in choice["candidates"] if r.get("name") == name), {})
        keep = (row.get("info") or {}).get("fp32_nodes")
        if isinstance(keep, list) and size == tuple(choice["size"]):
            n_tune = 0  # the measured fp32 fallback layers are reused: no search, no tune images
        else:
            keep = None
        cached = int8_cache.load(name, model, choice, size, keep, streams)
        if cached is not None:
            return cached
        imgs, _ = _images(cal["spec"], size, n + n_tune, cal["split"])
        calib, tune = imgs[:n], (imgs[n:] or None)
    pred = paths.build_candidate(name, model, size, threads=choice["threads"], calib=calib,
                                 check=tune, device=dev, min_agreement=choice["min_agreement"],
                                 keep_fp32=keep, streams=streams)
    if name == "openvino-int8":
        int8_cache.store(pred, model, choice, size, keep)
    return pred
