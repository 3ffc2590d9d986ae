"""Derived architectures: the versioned JSON file format, derivation rules and diagrams."""

from fasterseg.arch.schema import SCHEMA_ID, Arch, Branch, Cell, load_arch, published_arch_path

__all__ = [
    "SCHEMA_ID",
    "Arch",
    "Branch",
    "Cell",
    "derive_from_params",
    "draw_arch",
    "format_arch",
    "load_arch",
    "published_arch_path",
]


def __getattr__(name: str):
    # Lazy: derivation and diagrams pull in torch/matplotlib, the schema does not.
    if name == "derive_from_params":
        from fasterseg.arch.derive import derive_from_params

        return derive_from_params
    if name in ("draw_arch", "format_arch"):
        from fasterseg.arch import diagram

        return getattr(diagram, name)
    raise AttributeError(name)
