"""``fasterseg data check``: pair every image with its label and list everything that is wrong.

Problems (the check fails): missing partners (image without label, label without image),
unreadable or corrupt files, image/label size mismatches, label values that are neither a class
nor the ignore value, empty splits, and a split whose labels hold no pixel of any class (every
pixel void/ignore: training on it sees a loss of 0 and evaluation has no mIoU). Warnings (the
check still passes): single label files with no valid pixel. Information only: images whose size
is not divisible by 32 (the network pads them), splits shipped without labels, counts and
per-class pixel frequencies.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from fasterseg.data import presets
from fasterseg.data.io import read_image, read_label
from fasterseg.data.labels import IGNORE_INDEX
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

PROBLEM_KINDS = (
    "empty_split", "missing_label", "missing_image", "unreadable", "size_mismatch",
    "bad_label_values", "all_void_split",
)  # fmt: skip
WARNING_KINDS = ("all_void",)


def _check_pair(item, preset: str, spec, num_classes: int) -> dict:
    """Read one pair fully (decode, not just the header) and summarise it."""
    img_path, lab_path = item
    out: dict = {"image": img_path, "label": lab_path, "problems": []}
    try:
        image = read_image(img_path)
        out["size"] = image.shape[:2]
    except UserError as e:
        out["problems"].append(("unreadable", img_path, str(e)))
    if lab_path is None:
        return out
    try:
        stored = read_label(lab_path)
    except UserError as e:
        out["problems"].append(("unreadable", lab_path, str(e)))
        return out
    if "size" in out and stored.shape != out["size"]:
        h, w = out["size"]
        out["problems"].append(
            ("size_mismatch", lab_path,
             f"label is {stored.shape[0]}x{stored.shape[1]}, image {img_path.name} is {h}x{w}")
        )  # fmt: skip
    lut = presets.label_lut(preset, lab_path, spec)
    if stored.size and int(stored.max()) >= len(lut):
        detail = f"value {int(stored.max())} out of range"
        out["problems"].append(("bad_label_values", lab_path, detail))
        return out
    mapped = lut[stored].astype(np.int64)
    bad = mapped < 0
    if bad.any():
        vals = np.unique(stored[bad])
        out["problems"].append(
            ("bad_label_values", lab_path,
             f"{int(bad.sum())} pixels with values {vals[:8].tolist()} (classes are 0.."
             f"{num_classes - 1}, ignore 255)")
        )  # fmt: skip
    mapped[mapped == IGNORE_INDEX] = num_classes
    out["counts"] = np.bincount(mapped[~bad], minlength=num_classes + 1)[: num_classes + 1]
    return out


def check_dataset(
    preset: str,
    root: str | Path,
    splits: list[str] | None = None,
    spec_path: str | Path | None = None,
    workers: int = 0,
    progress: bool | None = None,
) -> dict:
    """Check ``splits`` (default: every split that exists) and return a JSON-able report."""
    if preset == "synthetic":
        raise UserError("the synthetic preset has no files to check (use a real dataset root)")
    if preset not in presets.PRESETS:
        choices = ", ".join(presets.PRESETS)
        raise UserError(f"unknown dataset preset {preset!r} (choose from {choices})")
    root = Path(root)
    spec = None
    if preset == "folder":
        spec = presets.load_folder_spec(presets.folder_spec_path(root, spec_path))
        label_set = spec.label_set
    else:
        label_set = presets.preset_label_set(preset)
    if not splits:
        splits = presets.available_splits(preset, root)
        if not splits:
            layout = presets.LAYOUTS[preset].replace("ROOT", str(root))
            raise UserError(f"{preset}: no split found under {root} (expected {layout})")
    nc = label_set.num_classes
    problems: list[dict] = []
    warnings: list[dict] = []
    notes: list[str] = []
    split_info: dict[str, dict] = {}
    counts = np.zeros(nc + 1, np.int64)
    sizes: Counter = Counter()
    not32: list[str] = []

    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    def add(split, kind, path, detail, to=problems):
        to.append({"split": split, "kind": kind, "file": rel(Path(path)), "detail": detail})

    for split in splits:
        disc = presets.discover(preset, root, split, spec)
        info = {
            "images": len(disc.images), "labels": len(disc.labels), "has_labels": disc.has_labels
        }
        split_info[split] = info
        if not disc.images:
            add(split, "empty_split", disc.image_dir, "no images found")
        if not disc.has_labels:
            lab_dir = rel(Path(disc.label_dir))
            notes.append(f"split {split!r} has no label folder ({lab_dir}): images only")
        for n in disc.missing_labels():
            add(split, "missing_label", disc.images[n], f"no label found in {rel(disc.label_dir)}")
        for n in disc.missing_images():
            add(split, "missing_image", disc.labels[n], f"no image found in {rel(disc.image_dir)}")
        items = [(img, lab) for _, img, lab in disc.pairs()]
        fn = functools.partial(_check_pair, preset=preset, spec=spec, num_classes=nc)
        results = _map(fn, items, workers, progress, desc=f"check {split}")
        info["pairs"] = sum(1 for _, lab in items if lab is not None)
        void: list[Path] = []  # labels read fine whose every pixel is void/ignore
        read = 0
        for res in results:
            for kind, path, detail in res["problems"]:
                add(split, kind, path, detail)
            if "size" in res:
                h, w = res["size"]
                sizes[f"{h}x{w}"] += 1
                if h % 32 or w % 32:
                    not32.append(rel(res["image"]))
            if "counts" in res:
                counts += res["counts"]
                read += 1
                if not res["counts"][:nc].any():
                    void.append(res["label"])
        if read and len(void) == read:
            add(split, "all_void_split", disc.label_dir,
                f"none of its {read} labels has a pixel of any of the {nc} classes (every pixel is "
                f"void/ignore {IGNORE_INDEX}): training would see a loss of 0, evaluation no mIoU")
        else:
            detail = f"every pixel is void/ignore ({IGNORE_INDEX}): this label teaches nothing"
            for lab in void:
                add(split, "all_void", lab, detail, to=warnings)
    total = int(counts[:nc].sum())
    report = {
        "preset": preset,
        "root": str(root),
        "splits": split_info,
        "images": sum(s["images"] for s in split_info.values()),
        "labels": sum(s["labels"] for s in split_info.values()),
        "problems": problems,
        "problem_counts": dict(Counter(p["kind"] for p in problems)),
        "warnings": warnings,
        "warning_counts": dict(Counter(w["kind"] for w in warnings)),
        "class_names": list(label_set.class_names),
        "class_pixels": {n: int(c) for n, c in zip(label_set.class_names, counts[:nc])},
        "class_frequency": {
            n: (float(c) / total if total else 0.0)
            for n, c in zip(label_set.class_names, counts[:nc])
        },
        "ignore_pixels": int(counts[nc]),
        "sizes": dict(sizes),
        "not_divisible_by_32": len(not32),
        "not_divisible_by_32_examples": not32[:10],
        "notes": notes,
        "ok": not problems,
    }
    return report


def _map(fn, items: list, workers: int, progress: bool | None, desc: str) -> list:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if progress is None else not progress
    if workers and workers > 0 and len(items) > 8:
        import multiprocessing as mp

        with mp.get_context().Pool(workers) as pool:
            it = pool.imap(fn, items, chunksize=8)
            return list(tqdm(it, total=len(items), desc=desc, disable=disable, leave=False))
    return [fn(x) for x in tqdm(items, desc=desc, disable=disable, leave=False)]


def format_report(report: dict, max_rows: int = 50) -> str:
    """Human-readable report: counts per split, class frequencies, problem table."""
    lines = [f"{report['preset']} dataset at {report['root']}"]
    lines.append(f"  {'split':<12}{'images':>8}{'labels':>8}")
    for split, info in report["splits"].items():
        lines.append(f"  {split:<12}{info['images']:>8}{info['labels']:>8}")
    if report["sizes"]:
        by_count = sorted(report["sizes"].items(), key=lambda kv: -kv[1])
        sz = ", ".join(f"{k} ({v})" for k, v in by_count)
        lines.append(f"image sizes: {sz}")
    if report["not_divisible_by_32"]:
        lines.append(
            f"note: {report['not_divisible_by_32']} image(s) have a size not divisible by 32 "
            f"(e.g. {report['not_divisible_by_32_examples'][0]}); they are padded at evaluation"
        )
    for n in report["notes"]:
        lines.append(f"note: {n}")
    total = sum(report["class_pixels"].values())
    if total:
        lines.append("class pixel frequencies (labelled pixels):")
        for name, c in report["class_pixels"].items():
            lines.append(f"  {name:<16}{100.0 * c / total:7.2f}%  {c}")
        all_px = total + report["ignore_pixels"]
        share = 100.0 * report["ignore_pixels"] / all_px
        lines.append(f"  {'(ignore)':<16}{share:7.2f}% of all pixels")
    warns = report.get("warnings", [])
    if warns:
        counts = ", ".join(f"{k} {v}" for k, v in report["warning_counts"].items())
        lines.append(f"WARNINGS: {len(warns)} ({counts})")
        lines += _table(warns, max_rows)
    probs = report["problems"]
    if not probs:
        extra = f" ({len(warns)} warning(s) above)" if warns else ""
        lines.append(f"OK: no problems found{extra}")
        return "\n".join(lines)
    counts = ", ".join(f"{k} {v}" for k, v in report["problem_counts"].items())
    lines.append(f"PROBLEMS: {len(probs)} ({counts})")
    lines += _table(probs, max_rows)
    return "\n".join(lines)


def _table(rows: list[dict], max_rows: int) -> list[str]:
    """``kind  split  file: detail`` rows, at most ``max_rows`` of them."""
    wk = max(len("kind"), *(len(p["kind"]) for p in rows[:max_rows]))
    ws = max(len("split"), *(len(p["split"]) for p in rows[:max_rows]))
    lines = [f"  {'kind':<{wk}}  {'split':<{ws}}  file: detail"]
    for p in rows[:max_rows]:
        lines.append(f"  {p['kind']:<{wk}}  {p['split']:<{ws}}  {p['file']}: {p['detail']}")
    if len(rows) > max_rows:
        lines.append(f"  ... and {len(rows) - max_rows} more (use --json for the full list)")
    return lines
