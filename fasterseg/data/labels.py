"""Label sets: class names, palettes, ignore value and the Cityscapes labelId <-> trainId tables.

Every dataset preset yields labels as *train ids* (0..C-1) with 255 meaning "ignore". The tables
here turn the ids stored in a dataset's label files into train ids (and back, for the Cityscapes
test server, which wants label ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip

CITYSCAPES_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip

# Official Cityscapes table (cityscapesScripts labels.py): labelId -> trainId for ids 0..33.
# Ids not among the 19 evaluated classes map to 255. License plate (id -1) is stored as 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17,
    33: 18, 255: 255,
}  # fmt: skip

# trainId -> labelId, for writing Cityscapes test-server submission PNGs.
CITYSCAPES_TRAIN_ID_TO_LABEL_ID: list[int] = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33
]

CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
]  # fmt: skip
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
CAMVID_VOID = 11  # "Unlabelled" in the SegNet release; becomes 255

# Synthetic street scenes: 11 Cityscapes classes that the generator draws, with Cityscapes
# names and colours (and their Cityscapes label ids), so outputs look familiar.
SYNTHETIC_CLASSES = [
    "road", "sidewalk", "building", "fence", "pole", "traffic sign", "vegetation", "terrain",
    "sky", "person", "car",
]  # fmt: skip
SYNTHETIC_LABEL_IDS = [7, 8, 11, 13, 17, 20, 21, 22, 23, 24, 26]


@dataclass
class LabelSet:
    """Classes of a dataset as the model sees them (train ids 0..C-1, ``ignore_index`` ignored)."""

    name: str
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = IGNORE_INDEX
    train_id_to_label_id: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "train_id_to_label_id": self.train_id_to_label_id,
        }


def cityscapes_label_set(name: str = "cityscapes") -> LabelSet:
    return LabelSet(
        name, list(CITYSCAPES_CLASSES), list(CITYSCAPES_PALETTE),
        train_id_to_label_id=list(CITYSCAPES_TRAIN_ID_TO_LABEL_ID),
    )  # fmt: skip


def camvid_label_set() -> LabelSet:
    return LabelSet("camvid", list(CAMVID_CLASSES), list(CAMVID_PALETTE))


def synthetic_label_set() -> LabelSet:
    pal = [CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(c)] for c in SYNTHETIC_CLASSES]
    return LabelSet(
        "synthetic", list(SYNTHETIC_CLASSES), pal, train_id_to_label_id=list(SYNTHETIC_LABEL_IDS)
    )


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours for ``n`` classes (the PASCAL VOC bit-interleaving scheme)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i + 1
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def build_lut(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """Lookup table stored value -> train id; values absent from ``mapping`` become -1 (invalid)."""
    lut = np.full(size, -1, dtype=np.int16)
    for k, v in mapping.items():
        if 0 <= k < size:
            lut[k] = v
    return lut


def identity_mapping(num_classes: int, ignore_value: int = IGNORE_INDEX) -> dict[int, int]:
    """Stored values already are train ids; ``ignore_value`` means ignore."""
    m = {i: i for i in range(num_classes)}
    m[ignore_value] = IGNORE_INDEX
    m[IGNORE_INDEX] = IGNORE_INDEX
    return m


def cityscapes_label_ids_to_train_ids(label: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_labelIds.png`` array to train ids (non-evaluated ids -> 255)."""
    lut = build_lut(CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
    lut[lut < 0] = IGNORE_INDEX
    return lut[label].astype(np.uint8)


def train_ids_to_label_ids(pred: np.ndarray, table: list[int] | None = None) -> np.ndarray:
    """Train ids -> Cityscapes label ids (test-server format); ignore/unknown -> 0 (unlabeled)."""
    table = CITYSCAPES_TRAIN_ID_TO_LABEL_ID if table is None else table
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(table)] = table
    return lut[np.asarray(pred).astype(np.int64).clip(0, 255)]


def colorize(label: np.ndarray, palette: list[tuple[int, int, int]] | LabelSet) -> np.ndarray:
    """Class ids [H, W] -> RGB uint8 [H, W, 3]; ignore (and any id without a colour) -> black."""
    if isinstance(palette, LabelSet):
        palette = palette.palette
    lab = np.asarray(label)
    if hasattr(label, "cpu"):  # a torch tensor
        lab = label.cpu().numpy()
    lut = np.zeros((256, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:255]
    lut[: len(pal)] = pal
    idx = lab.astype(np.int64)
    idx = np.where((idx < 0) | (idx > 255), 255, idx)
    return lut[idx]
