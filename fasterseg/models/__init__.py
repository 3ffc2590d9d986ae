"""Derived FasterSeg networks built from architecture files, and named presets."""

from fasterseg.models.factory import (
    build_model,
    create_model,
    fasterseg_student,
    fasterseg_teacher,
    list_models,
    load_model,
    resolve_arch,
)
from fasterseg.models.network import FasterSegNet, check_input_size

__all__ = [
    "FasterSegNet",
    "build_model",
    "check_input_size",
    "create_model",
    "fasterseg_student",
    "fasterseg_teacher",
    "list_models",
    "load_model",
    "resolve_arch",
]
