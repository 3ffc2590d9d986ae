"""The search output file ``RUN_DIR/arch_params.json`` (``"schema": "fasterseg.archparams/1"``).

``fasterseg search`` writes it, ``fasterseg derive`` reads it. It holds the RAW (pre-softmax)
architecture logits of the teacher and the student exactly as the supernet keeps them, the search
space they belong to, and the supernet's validation mIoU per branch combination, so derivation is
a pure function of this one file (a ``miou`` of null means unknown: that combination is not
eligible in the branch choice). Shapes and indexing (scale index ``j``, ``L`` layers)::

    alpha[j]  [L - j, |ops|]        row r <-> layer r + j
    beta[j]   [L - j - 1, 2]        row r <-> layer r + j + 1; col 0 = from down, 1 = from keep
                                    (beta[0] is null: scale 0 has a single input)
    gamma[j]  [rows_j, |ratios|]    width of the scale-j feature output by layer l,
                                    r = l - max(j - 1, 0); rows_0 = L - 1, rows_j = L - j
                                    (null for the teacher: always the widest ratio)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError

SCHEMA_ID = "fasterseg.archparams/1"
ROLES = ("teacher", "student")
FILENAME = "arch_params.json"


def gamma_rows(num_layers: int, j: int) -> int:
    """Rows of ``gamma[j]``: scale 0 features are output by layers 0..L-2, scale j by j-1..L-2."""
    return num_layers - 1 if j == 0 else num_layers - j


def param_shapes(space: SearchSpaceConfig, role: str) -> dict[str, list]:
    """Expected tensor shapes per scale (``None`` where a tensor does not exist)."""
    L, n_ops, n_r = space.num_layers, len(space.operators), len(space.ratios)
    scales = range(len(space.rates))
    return {
        "alpha": [(L - j, n_ops) for j in scales],
        "beta": [None if j == 0 else (L - j - 1, 2) for j in scales],
        "gamma": None if role == "teacher" else [(gamma_rows(L, j), n_r) for j in scales],
    }


def combo_key(rates: list[int] | tuple[int, ...]) -> str:
    """Key of a branch combination in ``branch_scores``: sorted rates joined by commas."""
    return ",".join(str(r) for r in sorted(rates))


def _to_list(x: Any) -> Any:
    """Tensors / numpy arrays / nested sequences -> nested lists of floats (JSON-ready)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_to_list(v) for v in x]
    return x


def _check_matrix(value: Any, shape: tuple[int, int], where: str) -> None:
    if not isinstance(value, list) or len(value) != shape[0]:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise UserError(f"{where} must have {shape[0]} rows, got {got}")
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != shape[1]:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise UserError(f"{where}[{r}] must have {shape[1]} values, got {got}")
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise UserError(f"{where}[{r}][{c}] must be a number, got {v!r}")


def validate_role(params: dict, space: SearchSpaceConfig, role: str, where: str = "") -> None:
    """Check one role's ``alpha``/``beta``/``gamma`` against the space (errors name the field)."""
    block = params
    if not isinstance(block, dict):
        raise UserError(f"{where}{role} must be an object with alpha, beta, gamma")
    shapes = param_shapes(space, role)
    for name in ("alpha", "beta", "gamma"):
        expected = shapes[name]
        value = block.get(name)
        field = f"{where}{role}.{name}"
        if expected is None:
            if value is not None and role == "teacher" and name == "gamma":
                raise UserError(f"{field} must be null (the teacher always uses the widest ratio)")
            continue
        if not isinstance(value, list) or len(value) != len(expected):
            raise UserError(f"{field} must be a list of {len(expected)} per-scale tensors")
        for j, shp in enumerate(expected):
            if shp is None:
                if value[j] is not None:
                    raise UserError(f"{field}[{j}] must be null (scale {j} has a single input)")
                continue
            _check_matrix(value[j], shp, f"{field}[{j}]")


def space_from_params(params: dict) -> SearchSpaceConfig:
    """The ``space`` section as a validated ``SearchSpaceConfig``."""
    from fasterseg.config.core import from_dict

    space = params.get("space")
    if not isinstance(space, dict):
        raise UserError("arch params: missing or invalid field space (a SearchSpaceConfig mapping)")
    return from_dict(SearchSpaceConfig, space, "space")


def validate_archparams(params: Any, where: str = "arch params: ") -> dict:
    """Validate the whole file; returns it unchanged. At least one role must be present."""
    if not isinstance(params, dict):
        raise UserError(f"{where}the file must contain a JSON object")
    schema = params.get("schema")
    if schema != SCHEMA_ID:
        raise UserError(f"{where}schema must be {SCHEMA_ID!r}, got {schema!r}")
    space = space_from_params(params)
    if all(params.get(r) is None for r in ROLES):
        raise UserError(f"{where}neither teacher nor student parameters are present")
    for role in ROLES:
        if params.get(role) is not None:
            validate_role(params[role], space, role, where)
    scores = params.get("branch_scores") or {}
    if not isinstance(scores, dict):
        raise UserError(f"{where}branch_scores must be an object")
    for role, per in scores.items():
        if per is None:
            continue
        if role not in ROLES or not isinstance(per, dict):
            raise UserError(f"{where}branch_scores.{role} must be one of {ROLES} with an object")
        for key, val in per.items():
            # null (or NaN before writing, which the strict JSON writer turns into null): the
            # head had no labelled pixel to score, so its mIoU is unknown
            ok = isinstance(val, dict) and "miou" in val and (
                val["miou"] is None or isinstance(val["miou"], (int, float)))
            if not ok:
                raise UserError(f"{where}branch_scores.{role}.{key}.miou must be a number or null "
                                "(unknown)")
    target = params.get("latency_target_ms")
    if target is not None and (not isinstance(target, (int, float)) or target <= 0):
        raise UserError(f"{where}latency_target_ms must be a positive number or null")
    return params


def make_archparams(
    space: SearchSpaceConfig,
    teacher: dict | None,
    student: dict | None,
    *,
    num_classes: int = 19,
    epoch: int | None = None,
    stage: str = "search",
    branch_scores: dict | None = None,
    lut: str | None = None,
    latency_target_ms: float | None = 8.3,
) -> dict:
    """Assemble the file's dict from tensors or lists; a role is ``{"alpha", "beta", "gamma"}``."""
    from fasterseg.config.core import to_dict

    def role(block: dict | None) -> dict | None:
        if block is None:
            return None
        return {k: _to_list(block.get(k)) for k in ("alpha", "beta", "gamma")}

    out = {
        "schema": SCHEMA_ID,
        "space": to_dict(space),
        "num_classes": num_classes,
        "epoch": epoch,
        "stage": stage,
        "teacher": role(teacher),
        "student": role(student),
        "branch_scores": branch_scores or {},
        "lut": None if lut is None else str(lut),
        "latency_target_ms": latency_target_ms,
    }
    return validate_archparams(out)


def write_archparams(path: str | Path, params: dict) -> Path:
    """Validate and write atomically (a crash never leaves half a file)."""
    from fasterseg.utils.io import write_json

    validate_archparams(params)
    return write_json(path, params)


def load_archparams(path: str | Path) -> dict:
    """Read a file or a run directory holding ``arch_params.json``; validated."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
        if not p.is_file():
            raise UserError(
                f"{p.parent} has no {FILENAME} (expected the file `fasterseg search` writes "
                f"into its run directory)"
            )
    elif not p.is_file():
        raise UserError(f"arch params file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return validate_archparams(data, where=f"{p}: ")
