"""Check the validation files before training, so a bad one cannot fail an epoch's validation.

Validation reads every file of the split at the end of an epoch; one unreadable file used to
stop the run there, after the epoch's training. Reading each file once up front (threads, no
inference: a small fraction of one validation) finds it before any training: without
``data.skip_corrupt`` the run stops with one line naming the file, with it the file is left out
of validation and listed.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from torch.utils.data import Dataset, Subset

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)


def _problem(ds, index: int) -> str | None:
    try:
        ds.load(index)  # the exact reading validation does: decode, size and label-value checks
    except UserError as e:
        return str(e)
    return None


def check_val_files(
    ds: Dataset, skip_corrupt: bool, limit: int | None = None
) -> tuple[Dataset, list[str]]:
    """(dataset to validate on, problems found) for a file-backed validation split.

    Raises ``UserError`` naming the first bad file unless ``skip_corrupt``; then the bad files
    are dropped (a ``Subset``) and each is logged. Only the first ``limit`` samples are read
    (validation never reaches the others: ``train.eval_max_images``). Generated (synthetic) data
    is returned as is.
    """
    files = getattr(ds, "files", None)
    if not files or not hasattr(ds, "load"):
        return ds, []
    n = len(ds) if limit is None else min(len(ds), limit)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        problems = list(pool.map(lambda i: _problem(ds, i), range(n)))
    problems += [None] * (len(ds) - n)
    bad = [(i, p) for i, p in enumerate(problems) if p is not None]
    if not bad:
        return ds, []
    split = getattr(ds, "split", "validation")
    if not skip_corrupt:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"validation split {split!r}: {bad[0][1]}{more}; fix the file(s) or set "
                        "data.skip_corrupt=true to validate without them")
    for _, p in bad:
        logger.warning("skipping a bad validation sample (data.skip_corrupt): %s", p)
    keep = [i for i, p in enumerate(problems) if p is None]
    if not keep:
        raise UserError(f"validation split {split!r}: all {len(ds)} samples are unreadable "
                        f"(e.g. {bad[0][1]})")
    logger.warning("validating on %d of %d %r samples: %d skipped (listed above)", len(keep),
                   len(ds), split, len(bad))
    return Subset(ds, keep), [p for _, p in bad]
