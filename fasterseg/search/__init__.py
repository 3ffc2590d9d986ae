"""The co-search of FasterSeg (paper section 3.3, appendix F) as named, importable parts.

- ``state``: ``SearchState`` (supernet, optimisers, lambda, loss) and ``SegObjective``;
- ``steps``: ``weight_step`` and ``arch_step`` over a ``SearchState``, the relaxed latency term;
- ``latency``: the latency table, the derived candidates' latency and lambda adaptation;
- ``data``: the trainA / trainB split;
- ``loop``: ``search(cfg, run_dir)``, the epoch loop with validation, logging and checkpoints.

Import the submodules (``from fasterseg.search.steps import weight_step``); names below load
lazily so ``import fasterseg.search`` stays light.
"""

from __future__ import annotations

_NAMES = {
    "SearchState": "state", "SegObjective": "state", "SearchDiverged": "state",
    "weight_step": "steps", "arch_step": "steps", "weight_plan": "steps",
    "SEARCH_PLAN": "steps", "relaxed_latency": "steps", "student_latency": "steps",
    "search": "loop", "SearchResult": "loop",
}


def __getattr__(name: str):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"fasterseg.search.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'fasterseg.search' has no attribute {name!r}")


__all__ = sorted(_NAMES)
