"""Where each dataset keeps its files: discovery and pairing of images with labels.

A preset turns ``(root, split)`` into two maps, sample name -> image path and sample name ->
label path, plus the lookup table that turns stored label values into train ids. Pairing by
name (never by list files) means foreign absolute prefixes in shipped lists do not matter.
Discovery is lenient (it reports missing partners instead of failing) so ``fasterseg data
check`` can list every problem; :func:`pair_files` is the strict version used for training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from fasterseg.data.io import IMAGE_SUFFIXES
from fasterseg.data.labels import (
    CAMVID_VOID,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    IGNORE_INDEX,
    LabelSet,
    build_lut,
    camvid_label_set,
    cityscapes_label_set,
    default_palette,
    identity_mapping,
    synthetic_label_set,
)
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

PRESETS = ("synthetic", "cityscapes", "camvid", "bdd100k", "folder")

LAYOUTS = {
    "cityscapes": "ROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png with "
    "ROOT/gtFine/{split}/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)",
    "camvid": "ROOT/{split}/*.png with ROOT/{split}annot/*.png (SegNet layout)",
    "bdd100k": "ROOT/images/10k/{split}/*.jpg with ROOT/labels/sem_seg/masks/{split}/*.png "
    "(or ROOT/seg/images/{split}/*.jpg with ROOT/seg/labels/{split}/*_train_id.png)",
    "folder": "ROOT/images[/{split}]/... with ROOT/labels[/{split}]/... and ROOT/dataset.yaml",
}


@dataclass
class Discovery:
    """Files found for one split, before pairing."""

    split: str
    image_dir: Path
    label_dir: Path | None  # None or missing folder: the split has no labels at all
    images: dict[str, Path] = field(default_factory=dict)
    labels: dict[str, Path] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        return self.label_dir is not None and self.label_dir.is_dir()

    def pairs(self) -> list[tuple[str, Path, Path | None]]:
        return [(n, p, self.labels.get(n)) for n, p in sorted(self.images.items())]

    def missing_labels(self) -> list[str]:
        if not self.has_labels:
            return []
        return sorted(set(self.images) - set(self.labels))

    def missing_images(self) -> list[str]:
        return sorted(set(self.labels) - set(self.images))


def _scan(folder: Path, suffixes: tuple[str, ...], recursive: bool = True) -> dict[str, Path]:
    """name (path relative to ``folder`` minus the matched suffix) -> path."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    it = folder.rglob("*") if recursive else folder.iterdir()
    low = tuple(s.lower() for s in suffixes)
    for p in it:
        name = p.name.lower()
        for s in low:
            if name.endswith(s) and p.is_file():
                rel = p.relative_to(folder).as_posix()
                out[rel[: len(rel) - len(s)]] = p
                break
    return out


# ---------------------------------------------------------------------------------- spec
@dataclass
class FolderSpec:
    """Contents of a folder dataset's ``dataset.yaml``."""

    label_set: LabelSet
    ignore_value: int = IGNORE_INDEX
    id_to_train_id: dict[int, int] | None = None
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    label_suffix: str = ".png"

    def lut(self) -> np.ndarray:
        """Stored value -> train id. With a map, unmapped values are ignored (as Cityscapes)."""
        if self.id_to_train_id:
            lut = np.full(65536, IGNORE_INDEX, np.int16)
            for k, v in self.id_to_train_id.items():
                if 0 <= k < 65536:
                    lut[k] = v
        else:
            lut = np.full(65536, -1, np.int16)
            lut[: self.label_set.num_classes] = np.arange(self.label_set.num_classes)
            lut[IGNORE_INDEX] = IGNORE_INDEX
        lut[self.ignore_value] = IGNORE_INDEX
        return lut


def load_folder_spec(path: str | Path) -> FolderSpec:
    """Parse and validate ``dataset.yaml`` (errors name the file and the key)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"folder dataset: {p} not found; write one with at least `classes: [name, ...]` "
            "(see docs/custom_dataset.md or run `fasterseg data synth` for an example)"
        )
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise UserError(f"{p}: expected a mapping at the top level")
    known = {"name", "classes", "palette", "ignore_index", "id_to_train_id", "image_suffix",
             "label_suffix"}  # fmt: skip
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"{p}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(known))})")
    classes = d.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{p}: `classes` must be a non-empty list of class names")
    if len(classes) > 254:
        raise UserError(f"{p}: at most 254 classes are supported (255 means ignore)")
    palette = d.get("palette")
    if palette is None:
        palette = default_palette(len(classes))
    else:
        def rgb(c) -> bool:
            return isinstance(c, (list, tuple)) and len(c) == 3 and all(
                isinstance(v, int) and 0 <= v <= 255 for v in c
            )

        ok = isinstance(palette, list) and len(palette) == len(classes)
        ok = ok and all(rgb(c) for c in palette)
        if not ok:
            raise UserError(f"{p}: `palette` must list one [r, g, b] (0..255) per class")
    ignore = d.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or not 0 <= ignore <= 65535:
        raise UserError(f"{p}: `ignore_index` must be an integer label value, got {ignore!r}")
    if d.get("id_to_train_id") is None and ignore < len(classes):
        raise UserError(
            f"{p}: ignore_index {ignore} collides with class {classes[ignore]!r}; "
            "use a value >= the number of classes (e.g. 255) or give `id_to_train_id`"
        )
    mapping = d.get("id_to_train_id")
    if mapping is not None:
        if not isinstance(mapping, dict):
            raise UserError(f"{p}: `id_to_train_id` must map stored ids to train ids")
        try:
            mapping = {int(k): int(v) for k, v in mapping.items()}
        except (TypeError, ValueError):
            raise UserError(f"{p}: `id_to_train_id` keys and values must be integers") from None
        bad = [v for v in mapping.values() if not (0 <= v < len(classes) or v == IGNORE_INDEX)]
        if bad:
            raise UserError(f"{p}: `id_to_train_id` maps to {bad[0]}, not a class index or 255")
    img_sfx = d.get("image_suffix")
    img_sfx = IMAGE_SUFFIXES if img_sfx is None else (str(img_sfx),)
    name = str(d.get("name") or p.parent.name or "folder")
    ls = LabelSet(name, list(classes), [tuple(c) for c in palette])
    return FolderSpec(ls, ignore, mapping, img_sfx, str(d.get("label_suffix", ".png")))


# ---------------------------------------------------------------------------- label sets
def preset_label_set(preset: str, root: str | Path | None = None, spec_path=None) -> LabelSet:
    if preset == "synthetic":
        return synthetic_label_set()
    if preset == "cityscapes":
        return cityscapes_label_set()
    if preset == "bdd100k":
        return cityscapes_label_set("bdd100k")
    if preset == "camvid":
        return camvid_label_set()
    if preset == "folder":
        return load_folder_spec(folder_spec_path(root, spec_path)).label_set
    raise UserError(f"unknown dataset preset {preset!r} (choose from {', '.join(PRESETS)})")


def folder_spec_path(root, spec_path=None) -> Path:
    if spec_path:
        return Path(spec_path)
    if not root:
        raise UserError("folder preset: data.root is required")
    return Path(root) / "dataset.yaml"


# ------------------------------------------------------------------------------ discovery
def _check_root(preset: str, root) -> Path:
    if not root:
        raise UserError(f"{preset}: data.root is required (expected layout: {LAYOUTS[preset]})")
    r = Path(root).expanduser()
    if not r.is_dir():
        raise UserError(
            f"{preset}: dataset root {r} does not exist (expected layout: {LAYOUTS[preset]})"
        )
    return r


def _bdd_dirs(root: Path) -> tuple[Path, Path, str] | None:
    """(images parent, labels parent, label suffix) for the new or old BDD100K layout."""
    if (root / "images" / "10k").is_dir():
        return root / "images" / "10k", root / "labels" / "sem_seg" / "masks", ".png"
    for base in (root / "seg", root):
        if (base / "images").is_dir() and (base / "labels").is_dir():
            return base / "images", base / "labels", "_train_id.png"
    return None


def _folder_dirs(root: Path, split: str) -> tuple[Path, Path, bool]:
    """(image dir, label dir, has split subfolders)."""
    img_root, lab_root = root / "images", root / "labels"
    if (img_root / split).is_dir():
        return img_root / split, lab_root / split, True
    return img_root, lab_root, False


def available_splits(preset: str, root) -> list[str]:
    """Splits present on disk, in a natural order (train, val, test, then others)."""
    r = _check_root(preset, root)
    if preset == "cityscapes":
        base = r / "leftImg8bit"
        found = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    elif preset == "camvid":
        found = [p.name for p in r.iterdir() if p.is_dir() and (r / f"{p.name}annot").is_dir()]
        found += [s for s in ("train", "val", "test") if (r / s).is_dir() and s not in found]
    elif preset == "bdd100k":
        dirs = _bdd_dirs(r)
        found = [p.name for p in dirs[0].iterdir() if p.is_dir()] if dirs else []
    elif preset == "folder":
        img_root = r / "images"
        if not img_root.is_dir():
            found = []
        else:
            subs = [p.name for p in img_root.iterdir() if p.is_dir()]
            flat = any(p.is_file() for p in img_root.iterdir())
            found = ["all"] if flat or not subs else subs
    else:
        raise UserError(f"preset {preset!r} has no files on disk")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(set(found), key=lambda s: (order.get(s, 3), s))


def discover(preset: str, root, split: str, spec: FolderSpec | None = None) -> Discovery:
    """Find the images and labels of ``split``; a missing root/split is a ``UserError``."""
    r = _check_root(preset, root)
    layout = LAYOUTS[preset].replace("ROOT", str(r)).replace("{split}", split)

    def missing() -> UserError:
        have = available_splits(preset, r)
        found = f"splits found: {', '.join(have)}" if have else "no split found"
        return UserError(
            f"{preset}: split {split!r} not found under {r} ({found}); expected {layout}"
        )

    if preset == "cityscapes":
        img_dir, lab_dir = r / "leftImg8bit" / split, r / "gtFine" / split
        if not img_dir.is_dir():
            raise missing()
        d = Discovery(split, img_dir, lab_dir, _scan(img_dir, ("_leftImg8bit.png",)))
        ids = _scan(lab_dir, ("_gtFine_labelIds.png",))
        d.labels = {**ids, **_scan(lab_dir, ("_gtFine_labelTrainIds.png",))}
        return d
    if preset == "camvid":
        img_dir, lab_dir = r / split, r / f"{split}annot"
        if not img_dir.is_dir():
            raise missing()
        d = Discovery(split, img_dir, lab_dir, _scan(img_dir, IMAGE_SUFFIXES, recursive=False))
        d.labels = _scan(lab_dir, (".png",), recursive=False)
        return d
    if preset == "bdd100k":
        dirs = _bdd_dirs(r)
        if dirs is None or not (dirs[0] / split).is_dir():
            raise missing()
        img_dir, lab_dir = dirs[0] / split, dirs[1] / split
        d = Discovery(split, img_dir, lab_dir, _scan(img_dir, (".jpg", ".jpeg", ".png")))
        d.labels = _scan(lab_dir, (dirs[2],))
        return d
    if preset == "folder":
        spec = spec or load_folder_spec(r / "dataset.yaml")
        img_dir, lab_dir, has_splits = _folder_dirs(r, split)
        if not img_dir.is_dir():
            raise missing()
        if not has_splits:
            subs = [p.name for p in img_dir.iterdir() if p.is_dir()]
            if split != "all" and subs and not any(p.is_file() for p in img_dir.iterdir()):
                raise missing()  # split subfolders exist, but not this one
            if split not in ("all", "train"):
                logger.warning(
                    "folder dataset %s has no split subfolders: using all images for %r", r, split
                )
        d = Discovery(split, img_dir, lab_dir, _scan(img_dir, spec.image_suffixes))
        d.labels = _scan(lab_dir, (spec.label_suffix,))
        return d
    raise UserError(f"preset {preset!r} has no files on disk")


def label_lut(preset: str, label_path: Path | None, spec: FolderSpec | None = None) -> np.ndarray:
    """Stored value -> train id table for one label file (-1 marks values that are not valid)."""
    if preset == "cityscapes":
        if label_path is not None and label_path.name.endswith("_gtFine_labelIds.png"):
            return _CITYSCAPES_IDS_LUT
        return _TRAIN19_LUT
    if preset == "bdd100k":
        return _TRAIN19_LUT
    if preset == "camvid":
        return _CAMVID_LUT
    if preset == "folder":
        assert spec is not None
        return spec.lut()
    raise UserError(f"preset {preset!r} has no label files")


_TRAIN19_LUT = build_lut(identity_mapping(19))
_CITYSCAPES_IDS_LUT = build_lut(CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
_CAMVID_LUT = build_lut(identity_mapping(11, CAMVID_VOID))


def pair_files(
    disc: Discovery, preset: str, require_labels: bool
) -> list[tuple[Path, Path | None]]:
    """Strict pairing for training/evaluation: every image needs its label (names one if not)."""
    if not disc.images:
        raise UserError(
            f"{preset}: no images found in {disc.image_dir} (expected {LAYOUTS[preset]})"
        )
    if not disc.has_labels:
        if require_labels:
            raise UserError(
                f"{preset}: split {disc.split!r} has no label folder {disc.label_dir} "
                f"(expected {LAYOUTS[preset]})"
            )
        logger.warning("%s: split %r has no labels; labels will be all-ignore", preset, disc.split)
        return [(p, None) for _, p, _ in disc.pairs()]
    missing = disc.missing_labels()
    if missing:
        ex = disc.images[missing[0]]
        raise UserError(
            f"{preset}: {len(missing)} image(s) in split {disc.split!r} have no label, e.g. {ex} "
            f"(looked in {disc.label_dir}); run `fasterseg data check` for the full list"
        )
    return [(p, lab) for _, p, lab in disc.pairs()]
