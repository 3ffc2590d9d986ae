"""Evaluation: confusion-matrix metrics, whole-image inference (pad, flip, scales, window).

Reused by ``fasterseg eval``/``predict``, the training loop's validation and the search.
"""

from fasterseg.evaluation.evaluate import evaluate, format_table, save_confusion
from fasterseg.evaluation.inference import infer_image, pad_to_multiple
from fasterseg.evaluation.metrics import ConfusionMatrix
from fasterseg.evaluation.predictions import PredictionWriter, colorize_prediction

__all__ = [
    "ConfusionMatrix",
    "PredictionWriter",
    "colorize_prediction",
    "evaluate",
    "format_table",
    "infer_image",
    "pad_to_multiple",
    "save_confusion",
]
