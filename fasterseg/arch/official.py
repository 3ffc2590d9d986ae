"""Import of the authors' raw architecture files (``arch_0.pt`` teacher, ``arch_1.pt`` student).

Those files are ``torch.save``d dicts of raw logits (``alpha_{k}_{j}``, ``beta_{k}_{j}``,
``ratio_{k}_{j}``) plus four scalars (``mIoU02``, ``mIoU12``, ``latency02``, ``latency12``). The
derived network was never saved: the authors re-derived it at train time. To obtain *exactly* the
published teacher and student, :func:`derive_official` reproduces that derivation with its quirks
(facts section 7), in an explicit compatibility mode that the default path never uses:

* betas are softmaxed again in every one of the three derivation calls (in place in the caller's
  list), so the 1/16 call sees softmax^2 and the 1/32 call softmax^3;
* the single-downsample (1/16) branch picks ``downs[k] = 1`` for the beta row ``k`` (rows 1..L-4)
  with the largest "from down" probability, one layer earlier than the supernet wiring says;
* the 1/32 branch maximises ``beta1[i][0] * beta2[j][0]`` over ``j <= L-5``, ``1 <= i <= j-2``;
* skip pruning with ``min_len = round(L/3) + 2 * last``: the stride-1 skips and the at most
  ``L - min_len`` most probable of them (to be removed) are listed first; then every segment
  that starts after a downsample (to the next downsample or the end) that is all skips gets its
  least probable skip replaced (never the segment before the first downsample, never on the
  1/8-only branch), and such a fixed position keeps its removal slot, so one fewer skip is
  removed; all other skips take the next-best op. Alphas are modified in place across the three
  calls. ``tests/arch/test_derive_compat_property.py`` checks this against an independent
  statement of the rules over random parameters;
* the branch set is ``{8,32}`` or ``{16,32}`` by ``miou * (latency / 8.3) ** -0.07`` with the
  scalars stored in the file (the same in both files, so the teacher follows the student).

Loading is safe: ``torch.load(weights_only=True)`` with only numpy's scalar reconstructor and
dtype allow-listed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

from fasterseg.arch.archparams import combo_key, make_archparams
from fasterseg.arch.schema import Arch, Branch, Cell
from fasterseg.config.search_space import OPERATORS, SearchSpaceConfig
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

Role = Literal["teacher", "student"]
OFFICIAL_TARGET_MS = 8.3
OFFICIAL_W = -0.07
# Branch combinations the authors' code considers: scale indices (0 = 1/8, 1 = 1/16, 2 = 1/32),
# keyed by the suffix of their stored scalars.
OFFICIAL_COMBOS = {"02": (2, 0), "12": (2, 1)}


def _numpy_safe_globals() -> list:
    """The numpy objects a pickled numpy float64 scalar needs (and nothing else)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype]
    for name in ("Float64DType", "Float32DType", "Int64DType"):
        dt = getattr(getattr(np, "dtypes", None), name, None)
        if dt is not None:
            allowed.append(dt)
    return allowed


def load_official(path: str | Path) -> dict[str, Any]:
    """Load an official ``arch_*.pt`` safely; tensors are detached float32 CPU tensors."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"official architecture file not found: {p}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign pickle, a truncated file, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {p} as an official FasterSeg arch file: {first}") from None
    if not isinstance(raw, dict) or not any(str(k).startswith("alpha_") for k in raw):
        raise UserError(f"{p} is not an official FasterSeg arch file (no alpha_* tensors)")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().to(torch.float32).clone()
        else:
            out[k] = float(v)
    return out


def official_arch_index(raw: dict[str, Any]) -> int:
    """The arch index ``k`` of the tensors in the file (0 = teacher, 1 = student)."""
    ks = {int(str(k).split("_")[1]) for k in raw if str(k).startswith("alpha_")}
    if len(ks) != 1:
        raise UserError(f"official arch file holds tensors of several arch indices: {sorted(ks)}")
    return ks.pop()


def official_role(raw: dict[str, Any]) -> Role:
    """Detect the role from the ratio tensor width: 1 = teacher (never pruned), 5 = student."""
    k = official_arch_index(raw)
    width = raw[f"ratio_{k}_0"].shape[-1]
    if width == 1:
        return "teacher"
    if width > 1:
        return "student"
    raise UserError(f"cannot tell teacher from student: ratio_{k}_0 has width {width}")


def _tensors(raw: dict[str, Any], k: int, name: str, n: int, start: int = 0) -> list:
    try:
        return [raw[f"{name}_{k}_{j}"].clone() for j in range(start, n)]
    except KeyError as e:
        raise UserError(f"official arch file is missing tensor {e.args[0]}") from None


def official_to_params(
    raws: dict[str, dict[str, Any]], space: SearchSpaceConfig | None = None, source: str = ""
) -> dict:
    """Convert official file(s) ``{role: raw}`` into the ``arch_params.json`` dict (raw logits).

    The stored scalars become ``branch_scores[role]["8,32"|"16,32"]`` with ``miou`` and
    ``latency_ms`` (the authors' LUT latency on a 1080Ti with TensorRT).
    """
    space = space or SearchSpaceConfig()
    blocks: dict[str, dict | None] = {"teacher": None, "student": None}
    scores: dict[str, dict] = {}
    for role, raw in raws.items():
        k = official_arch_index(raw)
        n = len(space.rates)
        alpha = _tensors(raw, k, "alpha", n)
        beta = [None] + _tensors(raw, k, "beta", n, start=1)
        gamma = None if role == "teacher" else _tensors(raw, k, "ratio", n)
        blocks[role] = {"alpha": alpha, "beta": beta, "gamma": gamma}
        per = {}
        for suffix, scales in OFFICIAL_COMBOS.items():
            if f"mIoU{suffix}" in raw:
                key = combo_key([space.rates[s] for s in scales])
                per[key] = {"miou": float(raw[f"mIoU{suffix}"])}
                if f"latency{suffix}" in raw:
                    per[key]["latency_ms"] = float(raw[f"latency{suffix}"])
        scores[role] = per
    params = make_archparams(
        space,
        blocks["teacher"],
        blocks["student"],
        num_classes=19,
        epoch=None,
        stage="official-import",
        branch_scores=scores,
        lut=None,
        latency_target_ms=OFFICIAL_TARGET_MS,
    )
    params["source"] = source or "official FasterSeg arch file(s)"
    return params


# --------------------------------------------------------------------------------------------
# The authors' derivation, reproduced (compatibility mode only).


def _softmax_in_place(betas: list) -> None:
    import torch

    for i, b in enumerate(betas):
        betas[i] = torch.softmax(b, dim=-1)


def _compat_path(betas: list, last: int, num_layers: int) -> list[int]:
    """Scale of every layer's cell for a branch ending at scale ``last`` (authors' rules)."""
    L = num_layers
    downs = [0] * L
    if last == 1:
        col = betas[0][:, 0]
        best, k_best = -math.inf, None
        for k in range(1, L - 3):  # rows 0 and L-3 excluded
            if float(col[k]) > best:
                best, k_best = float(col[k]), k
        downs[k_best] = 1  # off-by-one w.r.t. the wiring (row k <-> layer k + 2)
    elif last == 2:
        best, pair = -math.inf, None
        for j in range(0, L - 4):
            for i in range(1, j - 1):
                v = float(betas[0][i][0] * betas[1][j][0])  # a float32 product, as theirs
                if v > best:
                    best, pair = v, (i, j)
        if pair is None:
            raise UserError(f"compat derivation needs at least 7 layers, got {L}")
        downs[pair[0] + 1] = 1
        downs[pair[1] + 2] = 1
    elif last != 0:
        raise UserError(f"compat derivation supports 3 scales, got last scale {last}")
    path, s = [], 0
    for layer in range(L):
        path.append(s)
        s += downs[layer]
    return path


def _compat_widths(ratios: list | None, path: list[int], num_widths: int) -> list[int]:
    """Index into ``space.ratios`` of the width after each layer 0..L-2 (teacher: the widest)."""
    out = []
    for layer in range(1, len(path)):
        s = path[layer]
        if ratios is None:
            out.append(num_widths - 1)
        else:
            row = ratios[0][layer - 1] if s == 0 else ratios[s][layer - s]
            out.append(int(row.argmax()))
    return out


def _compat_ops(
    alphas: list, path: list[int], widths: list[int], ignore_skip: bool, last: int
) -> tuple[list[int], list[int], list[int]]:
    """Ops with skip pruning; mutates ``alphas`` in place like the original."""
    import torch

    L = len(path)
    inf = float("inf")

    def row(layer: int):
        return alphas[path[layer]][layer - path[layer]]

    if ignore_skip:
        for layer in range(L):
            row(layer)[0] = -inf
    ops = [int(row(layer).argmax()) for layer in range(L)]
    is_down = [layer < L - 1 and path[layer + 1] > path[layer] for layer in range(L)]

    # skip probabilities as the rows stand now (a row fixed below is never asked again)
    p_skip = [float(torch.softmax(row(layer), dim=-1)[0]) for layer in range(L)]
    prob_skip = p_skip.__getitem__

    # The candidate list and its removal budget are fixed first, from the current argmax and skip
    # probabilities; the "all skips" fix below does not update them, so a position it fixes can
    # still hold one of the L - min_len removal slots (it is then kept as a real op, and one
    # fewer skip is removed).
    candidates = [p for p in range(L) if ops[p] == 0 and not is_down[p]]
    min_len = round(L / 3) + 2 * last
    removed = sorted(candidates, key=prob_skip, reverse=True)[: max(L - min_len, 0)]
    # "Not all skips": only segments that start after a downsample position (up to the next
    # downsample or the end) are checked; the segment before the first downsample, and the
    # whole 1/8-only branch, are not.
    downs = [p for p in range(L) if is_down[p]]
    for start, end in zip(downs, downs[1:] + [L]):
        seg = list(range(start + 1, end))
        if seg and all(p in candidates for p in seg):
            weakest = min(seg, key=prob_skip)
            row(weakest)[0] = -inf
            ops[weakest] = int(row(weakest).argmax())
    removed = [p for p in removed if ops[p] == 0]
    for p in range(L):  # every other skip (stride-2 ones included) takes the next-best op
        if ops[p] == 0 and p not in removed:
            row(p)[0] = -inf
            ops[p] = int(row(p).argmax())
    keep_ops, keep_path, keep_widths = [], [], list(widths)
    for p in sorted(removed, reverse=True):
        # remove the skip with its output width; a removed last cell drops the last width
        del keep_widths[min(p, len(keep_widths) - 1)]
    for p in range(L):
        if p not in removed:
            keep_ops.append(ops[p])
            keep_path.append(path[p])
    return keep_ops, keep_path, keep_widths


def compat_branches(
    alpha: list, beta: list, gamma: list | None, space: SearchSpaceConfig, role: Role
) -> dict[int, tuple[list[int], list[int], list[int]]]:
    """The three calls (last scale 0, 1, 2) on shared, mutated tensors.

    Returns ``{last: (ops, path, widths)}`` with width indices into ``space.ratios``.
    """
    alphas = [a.clone() for a in alpha]
    betas = [b.clone() for b in beta if b is not None]
    ratios = None if gamma is None else [g.clone() for g in gamma]
    out = {}
    for last in range(3):
        _softmax_in_place(betas)
        path = _compat_path(betas, last, space.num_layers)
        widths = _compat_widths(ratios, path, len(space.ratios))
        out[last] = _compat_ops(alphas, path, widths, role == "teacher", last)
    return out


def official_objective(
    miou: float, latency_ms: float, target_ms: float = OFFICIAL_TARGET_MS
) -> float:
    return miou * (latency_ms / target_ms) ** OFFICIAL_W


def _cells(ops, path, widths, space: SearchSpaceConfig, head_ratio: int) -> tuple[Cell, ...]:
    cells = []
    for i, (op, s) in enumerate(zip(ops, path)):
        stride = 2 if i < len(path) - 1 and path[i + 1] > s else 1
        ratio = head_ratio if i == len(ops) - 1 else space.ratios[widths[i]]
        cells.append(Cell(OPERATORS[op], space.rates[s], stride, ratio))
    return tuple(cells)


def derive_compat(
    block: dict,
    role: Role,
    scores: dict[str, dict],
    space: SearchSpaceConfig | None = None,
    num_classes: int = 19,
    name: str | None = None,
    provenance: dict | None = None,
) -> tuple[Arch, dict]:
    """The authors' derivation of one role from raw tensors ``{"alpha", "beta", "gamma"}``.

    ``scores`` maps ``"8,32"`` / ``"16,32"`` to ``{"miou", "latency_ms"}`` (the stored scalars).
    """
    import torch

    space = space or SearchSpaceConfig()
    if space.operators != list(OPERATORS) or space.rates != [8, 16, 32]:
        raise UserError("compat='official' needs the official operators and rates 8/16/32")

    def tensors(x):
        if x is None:
            return None
        return [None if t is None else torch.as_tensor(t, dtype=torch.float32) for t in x]

    branches = compat_branches(
        tensors(block["alpha"]), tensors(block["beta"]), tensors(block.get("gamma")), space, role
    )
    objectives = {}
    for suffix, scales in OFFICIAL_COMBOS.items():
        key = combo_key([space.rates[s] for s in scales])
        sc = scores.get(key)
        if not sc or sc.get("miou") is None or "latency_ms" not in sc:
            raise UserError(
                f"compat='official' needs branch_scores.{role}.{key} with miou and latency_ms"
            )
        objectives[key] = official_objective(sc["miou"], sc["latency_ms"])
    better_02 = objectives["8,32"] > objectives["16,32"]
    chosen = OFFICIAL_COMBOS["02"] if better_02 else OFFICIAL_COMBOS["12"]
    teacher = role == "teacher"
    stem = space.teacher_stem_ratio if teacher else space.student_stem_ratio
    head = space.teacher_head_ratio if teacher else space.student_head_ratio
    out_branches = []
    for last in chosen:
        ops, path, widths = branches[last]
        out_branches.append(Branch(space.rates[last], _cells(ops, path, widths, space, head)))
    prov = {
        "role": role,
        "rules": "compat=official (authors' derivation quirks, facts section 7)",
        "objective": {"target_ms": OFFICIAL_TARGET_MS, "w": OFFICIAL_W, "values": objectives},
        "branch_scores": {k: scores[k] for k in objectives},
    }
    prov.update(provenance or {})
    arch = Arch(name or f"fasterseg_{role}", num_classes, stem, head, tuple(out_branches), prov)
    report = {
        "role": role,
        "branches": [space.rates[s] for s in chosen],
        "objectives": objectives,
        "all_branches": {
            space.rates[last]: {"ops": ops, "path": path, "widths": widths}
            for last, (ops, path, widths) in branches.items()
        },
    }
    return arch, report


def derive_official(
    raw: dict[str, Any], role: Role | None = None, source: str = ""
) -> tuple[Arch, dict]:
    """Published teacher/student from a loaded official file (see :func:`load_official`)."""
    detected = official_role(raw)
    role = role or detected
    if role != detected:
        logger.warning("--role %s overrides the detected role %s", role, detected)
    k = official_arch_index(raw)
    space = SearchSpaceConfig()
    block = {
        "alpha": _tensors(raw, k, "alpha", 3),
        "beta": [None] + _tensors(raw, k, "beta", 3, start=1),
        "gamma": None if role == "teacher" else _tensors(raw, k, "ratio", 3),
    }
    if block["gamma"] is not None and block["gamma"][0].shape[-1] != len(space.ratios):
        raise UserError(
            f"role {role} needs ratio tensors of width {len(space.ratios)}, "
            f"got {block['gamma'][0].shape[-1]} (is this the teacher file?)"
        )
    scores = official_to_params({role: raw}, space)["branch_scores"][role]
    prov = {"source": source or "official arch file", "compat": "official"}
    return derive_compat(block, role, scores, space, provenance=prov)
