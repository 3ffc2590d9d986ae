"""The shipped presets (``fasterseg/configs/<kind>/<name>.yaml``, installed as package data).

One resolver for every place a config is named: ``-c`` of train/search/eval/pipeline/demo/ablate,
the pipeline's defaults and the ``config:``/``space:`` references inside pipeline YAMLs.

* an existing file (absolute, or relative to the working directory) is used as given;
* ``configs/<kind>/<name>.yaml``, ``<kind>/<name>[.yaml]`` or a bare ``<name>`` that is not a
  file here is the packaged preset (so the documented commands work from any directory, with a
  regular non-editable install);
* anything else is one line naming the presets there are.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path, PurePath

from fasterseg.errors import UserError

KINDS = ("train", "search", "pipeline", "data")


def preset_root() -> Path:
    """The packaged ``configs`` folder."""
    return Path(str(files("fasterseg").joinpath("configs")))


def available(kind: str) -> list[str]:
    """Preset names of one kind (``synthetic_tiny``, ``camvid``, ...)."""
    d = preset_root() / kind
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _packaged(spec: str, kind: str | None) -> tuple[Path | None, str | None]:
    """The packaged candidate for ``spec`` (None if the spec cannot name one) and its kind."""
    parts = PurePath(spec).parts
    if parts and parts[0] == "configs":
        parts = parts[1:]
    if len(parts) == 2 and parts[0] in KINDS:
        kind, name = parts
    elif len(parts) == 1 and kind is not None:
        name = parts[0]
    else:
        return None, kind
    if not name.endswith((".yaml", ".yml")):
        name += ".yaml"
    return preset_root() / kind / name, kind


def resolve_preset(spec: str | Path, kind: str | None = None) -> Path:
    """A config file path or preset name -> the file to read (``UserError`` when there is none).

    ``kind`` (train, search, pipeline, data) lets a bare name like ``synthetic_tiny`` be found.
    """
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    cand, kind = (None, kind) if p.is_absolute() else _packaged(spec, kind)
    if cand is not None and cand.is_file():
        return cand
    if kind in KINDS:
        names = available(kind)
        hint = f" (presets in configs/{kind}/: {', '.join(names)})" if names else ""
    else:
        hint = "; presets: " + "; ".join(
            f"{k}: {', '.join(available(k))}" for k in KINDS if available(k))
    raise UserError(f"config file not found: {spec}{hint}")
