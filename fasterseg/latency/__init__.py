"""Latency: block signatures, the lookup table (JSON), measurement back ends, latency models."""

from fasterseg.latency.model import (
    OFFICIAL_WEIGHTS,
    PAPER_WEIGHTS,
    RelaxedLatency,
    discrete_latency,
    latency_breakdown,
)
from fasterseg.latency.signature import Block, arch_blocks, parse_key
from fasterseg.latency.table import SCHEMA_ID, LatencyTable, MissingKeyError, load_table

__all__ = [
    "OFFICIAL_WEIGHTS",
    "PAPER_WEIGHTS",
    "SCHEMA_ID",
    "Block",
    "LatencyTable",
    "MissingKeyError",
    "RelaxedLatency",
    "arch_blocks",
    "discrete_latency",
    "latency_breakdown",
    "load_table",
    "parse_key",
]
