"""Reading input photos for inference as 8-bit RGB, high bit depths included.

The conversion is shared with training and evaluation: it lives in :mod:`fasterseg.data.io`
(``to_rgb8``; ``read_image`` uses it) and is re-exported here for the inference readers.
"""

from fasterseg.data.io import to_rgb8

__all__ = ["to_rgb8"]
