"""Where ``eval`` and ``predict`` may write: checked before any work, never over the user's data.

Three rules, each a one-line ``UserError`` raised before the first image is processed:

* never into a dataset: an output folder that overlaps the image or label folders of a dataset
  (the evaluated one, or one recognised by its layout around the output or input folders) is
  refused, with or without ``--overwrite``: writing ``D/labels/<name>.png`` of the flat ``folder``
  layout would replace the ground truth;
* never over an input image (``predict``), with or without ``--overwrite``;
* never over existing prediction files without ``--overwrite``.

And the output folders must be creatable and writable: a finished evaluation must not be lost
because its folder turns out read-only afterwards.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from fasterseg.errors import UserError


def _resolve(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def dataset_folders(root: str | os.PathLike, preset: str | None = None) -> list[Path]:
    """The image and label folders of a dataset at ``root`` (resolved; may not exist yet).

    ``preset`` names the layout; ``None`` recognises any known layout at ``root`` (used to spot
    a dataset next to an output folder when none was named, as in ``predict``).
    """
    r = _resolve(root)
    try:
        return _dataset_folders(r, preset) if r.is_dir() else []
    except OSError:  # an unreadable parent folder: nothing recognisable there
        return []


def _dataset_folders(r: Path, preset: str | None) -> list[Path]:
    found: list[Path] = []
    if preset == "folder":
        found += [r / "images", r / "labels"]
    if preset in (None, "folder", "bdd100k"):  # ROOT/images + ROOT/labels (+ BDD's old layouts)
        for base in (r, r / "seg"):
            if (base / "images").is_dir() and (
                (base / "labels").is_dir() or (base / "dataset.yaml").is_file()
            ):
                found += [base / "images", base / "labels"]
        if (r / "images" / "10k").is_dir():  # BDD100K: images/10k + labels/sem_seg
            found += [r / "images", r / "labels"]
    if preset in (None, "cityscapes") and (r / "leftImg8bit").is_dir():
        found += [r / "leftImg8bit", r / "gtFine", r / "gtCoarse"]
    if preset in (None, "camvid"):
        for d in r.iterdir():
            if d.is_dir() and (r / f"{d.name}annot").is_dir():
                found += [d, r / f"{d.name}annot"]
    seen: list[Path] = []
    for p in found:
        if p.resolve() not in seen:  # a missing label folder counts: writing it creates labels
            seen.append(p.resolve())
    return seen


def nearby_dataset_folders(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Dataset folders recognised at each of ``paths`` or any of their parents."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        q = _resolve(p)
        for anc in (q, *q.parents):
            if anc in seen:
                break  # its parents were looked at too
            seen.add(anc)
            for f in dataset_folders(anc):
                if f not in out:
                    out.append(f)
    return out


def check_not_in_dataset(
    dirs: Sequence[str | os.PathLike], protected: Sequence[Path], flag: str,
    recursive: bool = True,
) -> None:
    """Refuse when an output folder in ``dirs`` overlaps a dataset folder in ``protected``.

    ``recursive``: the folder's files may go into subfolders (prediction names keep the input's
    subfolders), so a folder that contains a dataset folder is refused too; with ``False`` only a
    folder inside (or equal to) a dataset folder is (``eval --out`` writes a few fixed names).
    """
    for d in dirs:
        rd = _resolve(d)
        for p in protected:
            if rd == p or rd.is_relative_to(p) or (recursive and p.is_relative_to(rd)):
                raise UserError(
                    f"{flag} would write {rd} into the dataset folder {p}, which would replace or "
                    f"mix with the dataset's own files; choose an output folder outside it"
                )


def check_no_existing(paths: Sequence[Path], flag: str, overwrite: bool) -> None:
    """Refuse when prediction files in ``paths`` already exist (unless ``overwrite``)."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise UserError(
            f"{flag}: {len(existing)} output file(s) already exist, e.g. {existing[0]}; pass "
            f"--overwrite to replace them, or choose another folder"
        )


def check_not_inputs(paths: Sequence[Path], inputs: Iterable[Path], flag: str) -> None:
    """Refuse when an output file would replace one of the input images."""
    ins = {_resolve(p) for p in inputs}
    for p in paths:
        if _resolve(p) in ins:
            raise UserError(f"{flag} would overwrite the input image {p}; choose another folder")


def ensure_writable(folder: str | os.PathLike, flag: str, hint: str = "") -> Path:
    """Create ``folder`` (with parents) and check a file can be written there; one-line error
    (``hint`` appended, e.g. how to choose another folder)."""
    d = Path(folder).expanduser()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fasterseg-write-check.", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise UserError(f"{flag} {d} is not writable: {reason}{where}{hint}") from None
    return d
