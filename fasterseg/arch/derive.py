"""Derive discrete teacher and student architectures from searched parameters (paper 3.4, app. B).

Rules (the paper's, without the authors' bugs; ``compat="official"`` reproduces those instead,
see :mod:`fasterseg.arch.official`):

* **operators**: argmax of alpha per cell on the path (the teacher never uses skip);
* **expansion ratios**: argmax of gamma per feature (teacher: the widest ratio everywhere); the
  last cell of a branch outputs the head ratio;
* **downsample positions** from beta, matching the supernet wiring (beta[j] row r <-> layer
  r + j + 1, column 0 = input from the down op of scale j - 1): a branch ending at scale J picks
  the layers l_1 < ... < l_J where it first reaches scale j by maximising the joint probability
  prod_j beta0[j](l_j) (paper footnote 2). Cells (j, j) have a single input and no beta, so they
  cannot be a chosen transition;
* **minimum segment lengths** (``DeriveRules.min_seg``, on by default): a branch keeps at least
  so many cells at each rate it passes through, the minimums the authors' derivation enforces
  through its position ranges (facts section 7): a 1/16 branch >= 2 cells at 1/8 and >= 3 at
  1/16, a 1/32 branch >= 3 at 1/8, >= 3 at 1/16 and >= 2 at 1/32. They bound the downsample
  positions and the skip removal below, so the derived net keeps them. Minimums that do not fit
  in L layers (tiny search spaces) are not applied to that branch, and the report says so;
* **shallower nets**: stride-1 skips are removed (with their output width). Skips at downsample
  positions are replaced by the next-best operator, every maximal run of stride-1 cells at one
  rate keeps at least one real operator (its least likely skip is replaced), and at most
  ``L - min_len`` skips go (the most likely ones; ``min_len`` defaults to round(L/3) + 2J), none
  that would take a rate below its minimum segment length;
* **branch choice**: among the b-subsets of rates with a supernet score, maximise
  ``ACC x (LAT / T) ** w`` (MnasNet; w = -0.07 below and above T). LAT is the discrete latency of
  the candidate from a latency table or, without one, a MAC-count proxy;
* branches that begin with identical cells share them; that is implicit in the ``Arch`` format,
  so every branch is emitted in full.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from fasterseg.arch.archparams import space_from_params, validate_archparams
from fasterseg.arch.branch_choice import (  # re-exported: tests and callers import them here
    MNAS_W,
    PAPER_TARGET_MS,
    PUBLISHED_STUDENT_MS,
    MissingKeyError,
    cached_latency,
    choose_branches,
    latency_target,
    load_lut,
    mac_proxy_fn,
    objective,  # noqa: F401
    published_student,
    table_latency_fn,
)
from fasterseg.arch.derive_report import derive_official_params, role_provenance
from fasterseg.arch.schema import Arch, Branch, Cell
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

Role = Literal["teacher", "student"]
# Minimum segment lengths (cells per rate) of the authors' derivation, by branch depth: a 1/16
# branch downsamples at row k in 1..L-4 (2..13 cells at 1/8, >= 3 at 1/16); a 1/32 branch at
# i + 1 and j + 2 with 1 <= i <= j - 2, j <= L - 5 (>= 3 at 1/8, >= 3 at 1/16, >= 2 at 1/32).
DEFAULT_MIN_SEG: tuple[tuple[int, ...], ...] = ((2, 3), (3, 3, 2))


@dataclass(frozen=True)
class DeriveRules:
    """Parameters of the derivation (recorded in every derived file's provenance)."""

    w_below: float = MNAS_W  # MnasNet exponent when LAT <= T (paper alpha)
    w_above: float = MNAS_W  # ... when LAT > T (paper beta)
    min_len: int | None = None  # None: round(L / 3) + 2 * (index of the branch's last scale)
    # Minimum cells per rate of a branch, one entry per branch depth: an entry of n numbers is the
    # branch through the first n rates (first number = cells at 1/8). The defaults are the
    # authors' position ranges (facts section 7). () switches the rule off.
    min_seg: tuple[tuple[int, ...], ...] = DEFAULT_MIN_SEG
    # the teacher's branch set: chosen from its own scores, or the student's set
    teacher_branches: Literal["own", "student"] = "own"


def rules_dict(rules: DeriveRules) -> dict[str, Any]:
    """The rules as plain JSON types (lists, not tuples), for reports and provenance."""
    d = asdict(rules)
    d["min_seg"] = [list(e) for e in rules.min_seg]
    return d


# --------------------------------------------------------------------------------------------
# Small pure helpers on lists/arrays (tensors are accepted everywhere).


def as_array(x: Any) -> np.ndarray:
    """A tensor / nested list -> float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def softmax(x: Any, axis: int = -1) -> np.ndarray:
    a = as_array(x)
    a = a - np.max(a, axis=axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=axis, keepdims=True)


def default_min_len(num_layers: int, last_scale: int) -> int:
    return min(num_layers, round(num_layers / 3) + 2 * last_scale)


def min_seg_for(rules: DeriveRules, last_scale: int) -> tuple[int, ...] | None:
    """The minimum cells per rate of a branch ending at scale ``last_scale`` (None: no rule)."""
    for entry in rules.min_seg:
        if len(entry) == last_scale + 1:
            return tuple(int(m) for m in entry)
    return None


def segment_lengths(path: Sequence[int], last_scale: int) -> list[int]:
    """Cells at each scale 0..last_scale of a path (the downsampling cell counts at its input)."""
    return [sum(1 for s in path if s == j) for j in range(last_scale + 1)]


def min_seg_fits(min_seg: Sequence[int], num_layers: int) -> bool:
    """Whether some downsample positions meet ``min_seg`` in ``num_layers`` layers.

    Besides the total, the first transition can be no earlier than layer ``j + 1`` for scale j
    (cell (j, j) has no beta), so every prefix needs room for that too.
    """
    if sum(min_seg) > num_layers:
        return False
    first = 0
    for j, m in enumerate(min_seg[:-1], start=1):
        first = max(first + m, j + 1)
    return len(min_seg) == 1 or first + max(min_seg[-1], 1) <= num_layers


def transition_layers(
    betas: Sequence[Any],
    last_scale: int,
    num_layers: int,
    min_seg: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Layers ``l_1 < ... < l_J`` where the branch first reaches scales 1..J (``J = last_scale``).

    Maximises ``prod_j softmax(beta[j])[l_j - j - 1, 0]``; ties go to the earliest positions.
    ``betas[j]`` are raw logits ``[L - j - 1, 2]`` (``betas[0]`` is ignored). ``min_seg``: at
    least ``min_seg[j]`` layers at scale j (``l_1 >= m_0``, ``l_{j+1} - l_j >= m_j``,
    ``L - l_J >= m_J``).
    """
    if last_scale == 0:
        return ()
    if min_seg is not None and len(min_seg) != last_scale + 1:
        raise UserError(f"min_seg for a branch through {last_scale + 1} rates needs "
                        f"{last_scale + 1} numbers, got {list(min_seg)}")
    probs = {j: softmax(betas[j])[:, 0] for j in range(1, last_scale + 1)}
    best, best_layers = -1.0, None
    for layers in itertools.combinations(range(2, num_layers), last_scale):
        if any(layer < j + 2 for j, layer in enumerate(layers)):  # l_j >= j + 1 (1-based j)
            continue
        if min_seg is not None:
            bounds = (0, *layers, num_layers)
            if any(b - a < m for a, b, m in zip(bounds, bounds[1:], min_seg)):
                continue
        p = 1.0
        for j, layer in enumerate(layers, start=1):
            p *= probs[j][layer - j - 1]
        if p > best:
            best, best_layers = p, layers
    if best_layers is None:
        need = f" with at least {list(min_seg)} cells per rate" if min_seg is not None else ""
        raise UserError(f"{num_layers} layers are too few to reach scale {last_scale}{need}")
    return best_layers


def path_from_transitions(transitions: Sequence[int], num_layers: int) -> list[int]:
    """Scale index of every layer's cell (its input scale)."""
    return [sum(1 for t in transitions if t <= layer) for layer in range(num_layers)]


def derive_path(
    betas: Sequence[Any], last_scale: int, num_layers: int, min_seg: Sequence[int] | None = None
) -> list[int]:
    """Per-layer scale index of the branch ending at ``last_scale`` (see module docstring)."""
    layers = transition_layers(betas, last_scale, num_layers, min_seg)
    return path_from_transitions(layers, num_layers)


def derive_ratios(
    gammas: Sequence[Any] | None, path: Sequence[int], ratios: Sequence[int], head_ratio: int
) -> list[int]:
    """Output ratio chi of every cell on ``path``; ``gammas=None`` means the widest (teacher)."""
    L = len(path)
    out = []
    for layer in range(L - 1):
        q = path[layer + 1]  # scale of the feature this layer outputs
        if gammas is None:
            out.append(max(ratios))
        else:
            row = as_array(gammas[q])[layer - max(q - 1, 0)]
            out.append(int(ratios[int(np.argmax(row))]))
    out.append(head_ratio)
    return out


def derive_ops(
    alphas: Sequence[Any], path: Sequence[int], skip_index: int | None, allow_skip: bool = True
) -> tuple[list[int], list[np.ndarray]]:
    """Argmax operator index per layer and the per-layer operator probabilities."""
    ops, probs = [], []
    for layer, s in enumerate(path):
        p = softmax(as_array(alphas[s])[layer - s])
        if not allow_skip and skip_index is not None:
            p = p.copy()
            p[skip_index] = 0.0
            p /= p.sum()
        probs.append(p)
        ops.append(int(np.argmax(p)))
    return ops, probs


def _next_best(p: np.ndarray, skip_index: int) -> int:
    q = p.copy()
    q[skip_index] = -1.0
    return int(np.argmax(q))


def remove_skips(
    ops: Sequence[int],
    path: Sequence[int],
    out_ratios: Sequence[int],
    probs: Sequence[np.ndarray],
    skip_index: int | None,
    min_len: int,
    min_seg: Sequence[int] | None = None,
) -> tuple[list[int], list[int], list[int], dict]:
    """Shallower net: drop stride-1 skips (see module docstring). Returns ops, path, ratios, info.

    ``out_ratios`` has one entry per cell (the last one is the head ratio and stays last).
    ``min_seg[j]``: a skip at scale j is not removed when that would leave fewer cells at j.
    """
    L = len(ops)
    ops = list(ops)
    info: dict[str, list[int]] = {
        "replaced_down": [], "replaced_segment": [], "replaced_min_len": [],
        "replaced_min_seg": [], "removed": [],
    }
    if skip_index is None:
        return ops, list(path), list(out_ratios), info
    is_down = [i < L - 1 and path[i + 1] > path[i] for i in range(L)]
    for i in range(L):
        if ops[i] == skip_index and is_down[i]:
            ops[i] = _next_best(probs[i], skip_index)
            info["replaced_down"].append(i)
    segments: list[list[int]] = []
    for i in range(L):
        if is_down[i]:
            continue
        if segments and segments[-1][-1] == i - 1 and path[i - 1] == path[i] and not is_down[i - 1]:
            segments[-1].append(i)
        else:
            segments.append([i])
    for seg in segments:
        if all(ops[i] == skip_index for i in seg):
            weakest = min(seg, key=lambda i: probs[i][skip_index])
            ops[weakest] = _next_best(probs[weakest], skip_index)
            info["replaced_segment"].append(weakest)
    candidates = [i for i in range(L) if ops[i] == skip_index]
    candidates.sort(key=lambda i: -probs[i][skip_index])
    budget = max(L - min_len, 0)
    cells = {s: sum(1 for p in path if p == s) for s in set(path)}
    removed = []
    for i in candidates:  # the most likely first
        s = path[i]
        if len(removed) >= budget:
            info["replaced_min_len"].append(i)
        elif min_seg is not None and s < len(min_seg) and cells[s] - 1 < min_seg[s]:
            info["replaced_min_seg"].append(i)
        else:
            removed.append(i)
            cells[s] -= 1
            continue
        ops[i] = _next_best(probs[i], skip_index)
    removed.sort()
    info["removed"] = removed
    ratios = list(out_ratios)
    keep = [i for i in range(L) if i not in set(removed)]
    for i in sorted(removed, reverse=True):
        # a removed cell takes its output width with it; removing the last cell makes the new
        # last cell output the head ratio
        del ratios[i - 1 if i == len(ratios) - 1 else i]
    return [ops[i] for i in keep], [path[i] for i in keep], ratios, info


def branch_cells(
    ops: Sequence[int], path: Sequence[int], ratios: Sequence[int], space: SearchSpaceConfig
) -> tuple[Cell, ...]:
    cells = []
    for i, (op, s) in enumerate(zip(ops, path)):
        stride = 2 if i < len(path) - 1 and path[i + 1] > s else 1
        cells.append(Cell(space.operators[op], space.rates[s], stride, int(ratios[i])))
    return tuple(cells)


def derive_branch(
    block: dict, last_scale: int, space: SearchSpaceConfig, role: Role, rules: DeriveRules
) -> tuple[Branch, dict]:
    """One branch ending at ``space.rates[last_scale]`` from a role's raw parameters."""
    L = space.num_layers
    teacher = role == "teacher"
    head = space.teacher_head_ratio if teacher else space.student_head_ratio
    skip = space.operators.index("skip") if "skip" in space.operators else None
    min_seg = min_seg_for(rules, last_scale)
    note = None
    if min_seg is not None and not min_seg_fits(min_seg, L):
        note = (f"minimum segment lengths {','.join(map(str, min_seg))} do not fit in {L} layers: "
                "not applied to this branch")
        logger.info("%s branch 1/%d: %s", role, space.rates[last_scale], note)
        min_seg = None
    transitions = transition_layers(block["beta"], last_scale, L, min_seg)
    path = path_from_transitions(transitions, L)
    ops, probs = derive_ops(block["alpha"], path, skip, allow_skip=not teacher)
    ratios = derive_ratios(None if teacher else block.get("gamma"), path, space.ratios, head)
    min_len = rules.min_len if rules.min_len is not None else default_min_len(L, last_scale)
    ops, path, ratios, info = remove_skips(ops, path, ratios, probs, skip, min_len, min_seg)
    info.update(transitions=list(transitions), min_len=min_len,
                min_seg=None if min_seg is None else list(min_seg),
                segments=segment_lengths(path, last_scale))
    if note:
        info["min_seg_note"] = note
    return Branch(space.rates[last_scale], branch_cells(ops, path, ratios, space)), info


# --------------------------------------------------------------------------------------------
# Whole derivation.


def _role_candidates(
    block: dict, space: SearchSpaceConfig, role: Role, b: int, rules: DeriveRules
) -> tuple[dict[tuple[int, ...], Arch], dict[int, dict], dict[int, Branch]]:
    branches, infos = {}, {}
    for j in range(len(space.rates)):
        branches[j], infos[space.rates[j]] = derive_branch(block, j, space, role, rules)
    teacher = role == "teacher"
    stem = space.teacher_stem_ratio if teacher else space.student_stem_ratio
    head = space.teacher_head_ratio if teacher else space.student_head_ratio
    cands = {}
    for combo in itertools.combinations(range(len(space.rates)), b):
        rates = tuple(space.rates[j] for j in sorted(combo, reverse=True))
        chosen = tuple(branches[j] for j in sorted(combo, reverse=True))
        arch = Arch(f"derived_{role}", 19, stem, head, chosen)
        cands[rates] = arch
    return cands, infos, branches


def derive_from_params(
    params: dict,
    lut: Any = None,
    target_ms: float | None = None,
    b: int | None = None,
    *,
    rules: DeriveRules | None = None,
    compat: Literal["official"] | None = None,
    latency_fn: Callable[[Arch], float] | None = None,
    source: str | None = None,
) -> tuple[Arch | None, Arch | None, dict]:
    """Teacher and student ``Arch`` (None for a role absent from ``params``) and a report.

    ``params``: the ``arch_params.json`` dict. ``lut``: a latency table (path or loaded) for LAT;
    without one LAT is a MAC-count proxy. ``target_ms``: T; default 8.3 ms scaled to the table's
    device by the published student's latency on it (8.3 x LUT(student) / 6.26). ``b``: number of
    branches (default ``space.num_branches``). ``latency_fn`` overrides LAT (tests).
    """
    validate_archparams(params)
    space = space_from_params(params)
    rules = rules or DeriveRules()
    num_classes = int(params.get("num_classes") or 19)
    src = source or params.get("source") or "arch_params.json"
    scores_all = params.get("branch_scores") or {}
    if compat == "official":
        return derive_official_params(params, space, num_classes, src)
    if compat is not None:
        raise UserError(f"unknown compat mode {compat!r} (only 'official')")
    b = b if b is not None else space.num_branches
    if not 1 <= b <= len(space.rates):
        raise UserError(f"--branches must be between 1 and {len(space.rates)}, got {b}")
    _check_min_seg(rules.min_seg)

    table = load_lut(lut)
    report: dict[str, Any] = {"rules": rules_dict(rules), "num_branches": b, "source": src,
                              "epoch": params.get("epoch"), "stage": params.get("stage")}
    if latency_fn is not None:
        lat_fn, kind, unit = latency_fn, "custom", "ms"
    elif table is not None:
        lat_fn, kind, unit = table_latency_fn(table), "lut", "ms"
    else:
        lat_fn, kind, unit = mac_proxy_fn(), "mac_proxy", "GMACs@256x512"
        logger.info("no latency table: branch choice uses a MAC-count proxy for latency")
    lat_fn = cached_latency(lat_fn)
    target, target_note = latency_target(target_ms, lat_fn, kind, params)
    report["latency"] = {"kind": kind, "unit": unit, "target": target, "target_note": target_note}

    archs: dict[str, Arch | None] = {"teacher": None, "student": None}
    chosen: dict[str, tuple[int, ...]] = {}
    order = [r for r in ("student", "teacher") if params.get(r) is not None]
    for role in order:
        block = params[role]
        cands, infos, _ = _role_candidates(block, space, role, b, rules)
        scores = scores_all.get(role) or {}
        follow = rules.teacher_branches == "student" or not scores
        if role == "teacher" and follow and "student" in chosen:
            rates = chosen["student"]
            rows = [{"branches": list(rates), "note": "teacher follows the student's branch set"}]
        elif len(cands) == 1:
            rates = next(iter(cands))
            rows = [{"branches": list(rates), "note": "single candidate"}]
        else:
            try:
                rates, rows = choose_branches(cands, scores, lat_fn, target, rules)
            except UserError as e:
                if kind != "lut" or not isinstance(e, MissingKeyError):
                    raise
                # the table does not cover this role's candidates (e.g. a student-only table):
                # compare them by MACs instead, and say so
                msg = f"{role}: latency table misses candidate blocks, branch choice by MAC proxy"
                logger.warning(msg)
                report.setdefault("warnings", []).append(msg)
                proxy = mac_proxy_fn()
                proxy_t = proxy(published_student()) * PAPER_TARGET_MS / PUBLISHED_STUDENT_MS
                rates, rows = choose_branches(cands, scores, proxy, proxy_t, rules)
        chosen[role] = rates
        arch = cands[rates]
        lat = None
        try:
            lat = float(lat_fn(arch))
        except UserError as e:  # a table that does not cover this net: report, do not fail
            report.setdefault("warnings", []).append(f"{role}: latency unavailable: {e}")
        prov = role_provenance(
            params, role, src,
            {**rules_dict(rules), "num_branches": b, "target": target, "latency_kind": kind},
            rows, {"kind": kind, "unit": unit, "value": lat}, table,
        )
        name = f"derived_{role}"
        archs[role] = Arch(name, num_classes, arch.stem_ratio, arch.head_ratio, arch.branches, prov)
        report[role] = {"branches": list(rates), "candidates": rows, "latency": lat,
                        "paths": {str(k): v for k, v in infos.items()}}
    return archs["teacher"], archs["student"], report


def _check_min_seg(min_seg: Sequence[Sequence[int]]) -> None:
    """Entries of 2 or more whole numbers >= 0, one per branch depth (entries deeper than the
    space's rates are unused: the defaults stay valid for a two-rate space)."""
    lengths = [len(e) for e in min_seg]
    for e in min_seg:
        if len(e) < 2 or any(int(m) != m or m < 0 for m in e):
            raise UserError(
                f"min_seg entry {list(e)}: 2 or more numbers >= 0 (cells per rate of the branch "
                "through that many rates)"
            )
    if len(set(lengths)) != len(lengths):
        entries = [list(e) for e in min_seg]
        raise UserError(f"min_seg has two entries for the same branch: {entries}")
