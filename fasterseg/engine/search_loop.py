"""Moved to ``fasterseg.search`` (kept so that existing imports keep working)."""

from fasterseg.search.data import IndexSubset, split_indices
from fasterseg.search.latency import load_latency_models
from fasterseg.search.loop import CKPT_KIND, PHASES, SearchResult, Stage, search
from fasterseg.search.state import SearchDiverged, SegObjective
from fasterseg.search.steps import relaxed_latency

__all__ = [
    "CKPT_KIND",
    "PHASES",
    "IndexSubset",
    "SearchDiverged",
    "SearchResult",
    "SegObjective",
    "Stage",
    "load_latency_models",
    "relaxed_latency",
    "search",
    "split_indices",
]
