"""Derived architectures: the versioned JSON file format, derivation rules and diagrams."""

from fasterseg.arch.schema import SCHEMA_ID, Arch, Branch, Cell, load_arch, published_arch_path

__all__ = ["SCHEMA_ID", "Arch", "Branch", "Cell", "load_arch", "published_arch_path"]
