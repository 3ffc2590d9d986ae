"""Build a latency table: enumerate every block a search space can use, then time each one.

Coverage at input size H x W (rates s = 8, 16, 32; widths are s * chi):
- the five operators at every scale, stride 1 ("keep") and stride 2 ("down", not at the last
  scale), for every (input ratio, output ratio) pair: inputs range over the space's ratios plus
  the stem ratios at 1/8 (layer 0 reads the stem), outputs over the ratios plus the head ratios
  (the last layer feeds the head);
- the teacher's and the student's stem;
- for both head ratios: arms, x2 resizes and refines of every branch rate (refines for every
  skip width), the fusion of 1..b branches, the head and the final x8 resize.

Each entry is the median of ``reps`` timings after ``warmup`` runs. The partial table is saved
atomically every few entries, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from fasterseg.config.core import to_dict
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError
from fasterseg.latency.signature import Block, aggregation_step, decoder_blocks, stem_blocks
from fasterseg.latency.table import LatencyTable

logger = logging.getLogger(__name__)

# Fixed cost per timed run on top of the arithmetic (Python dispatch, allocation); used only to
# estimate how long a build takes.
_OVERHEAD_MS = 0.05


def input_ratios(space: SearchSpaceConfig, scale: int) -> list[int]:
    """Expansion ratios a cell input can have at scale index ``scale``."""
    r = set(space.ratios)
    if scale == 0:
        r |= {space.teacher_stem_ratio, space.student_stem_ratio}
    return sorted(r)


def output_ratios(space: SearchSpaceConfig) -> list[int]:
    """Expansion ratios a cell output can have (the last cell outputs the head ratio)."""
    return sorted(set(space.ratios) | {space.teacher_head_ratio, space.student_head_ratio})


def check_size(space: SearchSpaceConfig, size: Sequence[int]) -> None:
    h, w = size
    stride = space.rates[-1]
    if h % stride or w % stride:
        raise UserError(
            f"input size {h}x{w} must be divisible by {stride} (the deepest rate of the space); "
            f"nearest: {max(stride, h // stride * stride)}x{max(stride, w // stride * stride)}"
        )


def space_blocks(
    space: SearchSpaceConfig, size: Sequence[int], num_classes: int = 19
) -> list[Block]:
    """Every block the space can use at input ``size`` (unique, in a stable order)."""
    check_size(space, size)
    h, w = size
    blocks: dict[str, Block] = {}

    def add(b: Block) -> None:
        blocks.setdefault(b.key, b)

    for stem in sorted({space.teacher_stem_ratio, space.student_stem_ratio}):
        for b in stem_blocks(stem, size):
            add(b)
    outs = output_ratios(space)
    n = len(space.rates)
    for j, s in enumerate(space.rates):
        for op in space.operators:
            for a in input_ratios(space, j):
                for c in outs:
                    add(Block(op, h // s, w // s, s * a, s * c, stride=1))
                    if j < n - 1:
                        add(Block(op, h // s, w // s, s * a, 2 * s * c, stride=2))
    for head in sorted({space.teacher_head_ratio, space.student_head_ratio}):
        for j, rate in enumerate(space.rates[1:], start=1):
            # The step rate -> rate/2 of every branch that reaches ``rate``, for every skip width.
            for a in input_ratios(space, j - 1):
                for b in aggregation_step(rate, rate * head, head, (rate // 2) * a, size):
                    add(b)
        for nb in range(1, space.num_branches + 1):
            for b in decoder_blocks(head, nb, num_classes, size):
                add(b)
    return list(blocks.values())


def estimate_seconds(blocks: Sequence[Block], warmup: int, reps: int, gmacs_per_s: float) -> float:
    """Rough wall time of timing ``blocks`` given a measured throughput."""
    per_run = [b.macs / (gmacs_per_s * 1e9) + _OVERHEAD_MS / 1e3 for b in blocks]
    return sum(per_run) * (warmup + reps) * 1.2  # + module construction and transfers


def calibrate_throughput(
    blocks: Sequence[Block], backend: str, device: str, dtype: str, threads: int | None
) -> float:
    """GMAC/s of the most expensive block (quick, 3 runs), for the time estimate."""
    from fasterseg.latency.backends import measure_module

    big = max(blocks, key=lambda b: b.macs)
    ms = statistics.median(
        measure_module(big.build(), big.input_shapes(), backend, device, dtype, threads,
                       warmup=1, reps=3)
    )
    return max(big.macs / 1e9 / max(ms / 1e3 - _OVERHEAD_MS / 1e3, 1e-6), 1e-3)


def table_meta(
    space: SearchSpaceConfig, size: Sequence[int], backend: str, device: str, dtype: str,
    threads: int, warmup: int, reps: int, num_classes: int,
) -> dict:
    from fasterseg.latency.backends import device_name, library_versions

    return {
        "backend": backend,
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype,
        "threads": threads,
        "batch": 1,
        "input_size": [int(size[0]), int(size[1])],
        "num_classes": num_classes,
        "warmup": warmup,
        "reps": reps,
        "statistic": "median",
        "unit": "ms",
        "versions": library_versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "space": to_dict(space),
    }


_MUST_MATCH = (
    "backend", "device", "device_name", "dtype", "threads", "input_size", "num_classes", "clock"
)


def open_for_resume(path: Path, meta: dict) -> LatencyTable:
    """Existing partial table at ``path`` if it was measured the same way; else a new table."""
    if not path.exists():
        return LatencyTable({}, meta)
    old = LatencyTable.load(path)
    diff = [k for k in _MUST_MATCH if old.meta.get(k) != meta.get(k)]
    if diff:
        k = diff[0]
        raise UserError(
            f"{path} exists and was measured with {k}={old.meta.get(k)!r}, not {meta.get(k)!r}; "
            "choose another -o path or delete the file"
        )
    merged = dict(meta)
    merged["date_started"] = old.meta.get("date_started", old.meta.get("date"))
    return LatencyTable(old.entries, merged)


def round_plan(warmup: int, reps: int, rounds: int) -> tuple[int, list[int]]:
    """Warm-up runs per round and the cumulative number of timings expected after each round."""
    rounds = max(1, min(rounds, reps))
    warm = max(2, -(-warmup // rounds)) if warmup > 0 else 0
    return warm, [-(-reps * (r + 1) // rounds) for r in range(rounds)]


BUSY_SHARE = 0.8  # below this share of its threads' CPU time, the machine was busy


def cpu_share(cpu_seconds: float, wall_seconds: float, threads: int) -> float:
    """Share of ``threads`` cores this process actually ran on: 1.0 on a quiet machine."""
    if wall_seconds <= 0:
        return 1.0
    return min(1.0, cpu_seconds / (wall_seconds * max(1, threads)))


def build_table(
    space: SearchSpaceConfig,
    size: Sequence[int],
    out: str | Path,
    backend: str = "torch",
    device: str = "cpu",
    dtype: str = "fp32",
    threads: int | None = None,
    warmup: int = 10,
    reps: int = 30,
    rounds: int = 3,
    clock: str = "wall",
    num_classes: int = 19,
    save_every: float = 10.0,
    on_plan: Callable[[int, int, float], None] | None = None,
    progress: bool | None = None,
) -> LatencyTable:
    """Measure every block of ``space`` at ``size`` into the table file ``out`` (resumable).

    The ``reps`` timings of an entry are taken in ``rounds`` passes over all entries, so that a
    burst of load from other processes (a shared machine) hits a little of every entry rather
    than all of a few; the stored value is the median of all its timings. ``on_plan(todo, done,
    estimated_seconds)`` is called once before timing starts (the CLI prints it). The partial
    table (with the timings of unfinished entries) is saved every ``save_every`` seconds.
    """
    import torch
    from tqdm import tqdm

    from fasterseg.latency.backends import check_clock, measure_module, set_threads

    if warmup < 0 or reps < 1 or rounds < 1:
        raise UserError("--warmup must be >= 0, --reps >= 1 and --rounds >= 1")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    used_threads = torch.get_num_threads() if threads is None else threads
    check_clock(clock, device, used_threads)
    path = Path(out)
    blocks = space_blocks(space, size, num_classes)
    meta = table_meta(space, size, backend, device, dtype, used_threads, warmup, reps, num_classes)
    meta["rounds"] = rounds
    meta["clock"] = clock
    table = open_for_resume(path, meta)
    set_threads(used_threads)
    todo = [b for b in blocks if b.key not in table]
    warm, cumulative = round_plan(warmup, reps, rounds)
    est = 0.0
    if todo:
        gmacs = calibrate_throughput(todo, backend, device, dtype, threads)
        est = estimate_seconds(todo, warm * len(cumulative), reps, gmacs)
    if on_plan:
        on_plan(len(todo), len(blocks) - len(todo), est)
    logger.debug("%d blocks to measure (%d already in %s), about %.0f s", len(todo),
                 len(blocks) - len(todo), path, est)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    last_save = time.monotonic()
    steps = len(todo) * len(cumulative)
    bar = tqdm(total=steps, desc="latency table", unit="block", disable=disable)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with torch.inference_mode(), bar:
        for target in cumulative:
            for b in todo:
                bar.update(1)
                if b.key in table:
                    continue
                have = table.pending.setdefault(b.key, [])
                if len(have) >= target:
                    continue
                have += measure_module(b.build(), b.input_shapes(), backend, device, dtype, threads,
                                       warmup=warm, reps=target - len(have), clock=clock)
                if len(have) >= reps:
                    table.entries[b.key] = round(statistics.median(have), 6)
                    del table.pending[b.key]
                if time.monotonic() - last_save > save_every:
                    table.save(path)
                    last_save = time.monotonic()
    table.pending.clear()
    if todo and device == "cpu":
        busy = cpu_share(time.process_time() - cpu0, time.perf_counter() - wall0, used_threads)
        table.meta["cpu_share"] = round(busy, 3)
        if busy < BUSY_SHARE:
            logger.warning(
                "the CPU was busy while the table was measured: this process got %.0f %% of its "
                "%d thread(s), so entries are inflated (a 4x inflation was seen at 25 %%); "
                "rebuild on a quiet machine (delete %s or pass another -o)", 100 * busy,
                used_threads, path)
    table.meta["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    table.meta["complete"] = True
    table.save(path)
    return table
