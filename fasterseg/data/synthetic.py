"""Procedural street scenes: a learnable, download-free stand-in for Cityscapes.

A pinhole camera looks down a straight street. The ground (road with lane marks, curbs,
tiled sidewalks, grass verges) and the two rows of facades (buildings with windows, gaps
with trees or hedges behind fences) are computed per pixel from ground / facade coordinates,
so perspective is exact. Cars (rear and side faces, wheels, lights, shadows), people, poles
with traffic signs, and street trees are drawn far-to-near in their own bounding boxes.
Colours are re-drawn per scene (a grey building can look like the road, a car can be green),
lighting varies (exposure, tint, a facade casting a shadow across the street), and texture
and sensor noise are added, so a model must use shape and context, not colour alone. Thin
classes (poles, signs, people) are present at every size.

Labels are the 11 classes of :func:`fasterseg.data.labels.synthetic_label_set` (Cityscapes
names and colours); an ego-vehicle bonnet sometimes appears at the bottom and is labelled 255.

Everything is vectorised numpy; a 256x512 scene takes a few milliseconds on one core.
Scenes are a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fasterseg.data.labels import IGNORE_INDEX, SYNTHETIC_CLASSES

ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = range(11)
assert SYNTHETIC_CLASSES[CAR] == "car" and SYNTHETIC_CLASSES[SKY] == "sky"

# Texture strength per label (multiplicative noise), indexed by label value (255 -> ego car).
_TEX = np.zeros(256, np.float32)
_TEX[[ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR]] = [
    0.10, 0.07, 0.06, 0.05, 0.05, 0.03, 0.30, 0.22, 0.02, 0.08, 0.04
]
_TEX[IGNORE_INDEX] = 0.04

_FACADE_COLOURS = np.array(
    [[190, 170, 140], [150, 70, 55], [120, 120, 125], [215, 210, 200], [80, 80, 90],
     [170, 150, 120], [110, 120, 140], [200, 185, 160], [130, 100, 80], [95, 95, 95]],
    np.float32,
)  # fmt: skip
_CAR_COLOURS = np.array(
    [[200, 200, 205], [30, 30, 35], [150, 20, 25], [40, 60, 130], [110, 110, 115],
     [230, 230, 230], [40, 90, 50], [180, 150, 60], [90, 40, 30], [60, 60, 70]],
    np.float32,
)  # fmt: skip
_SIGN_COLOURS = np.array(
    [[200, 30, 30], [30, 70, 170], [230, 200, 30], [235, 235, 235], [30, 120, 60]], np.float32
)


def split_code(split: str) -> int:
    """Stable integer for a split name (part of the scene seed)."""
    return zlib.crc32(split.encode())


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), split_code(split), int(index)]))


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = max(2, h // cells + 2), max(2, w // cells + 2)
    grid = rng.random((gh, gw), dtype=np.float32) * 2 - 1
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BILINEAR))


class _Scene:
    """Mutable canvas: colour (H, W, 3) float32, label (H, W) uint8, shade (H, W) float32."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.cid = np.zeros((h, w), np.uint16)  # colour id per pixel (index into self.colours)
        self.colours: list[np.ndarray] = []
        self.ncolours = 0
        self.lab = np.full((h, w), SKY, np.uint8)
        self.shade = np.ones((h, w), np.float32)
        # Camera: focal length, horizon row, vanishing column, height above ground (m).
        self.f = w * rng.uniform(0.55, 0.85)
        self.h0 = h * rng.uniform(0.33, 0.5)
        self.vx = w * rng.uniform(0.38, 0.62)
        self.camh = rng.uniform(1.2, 1.8)
        self.ys = np.arange(h, dtype=np.float32) + 0.5
        self.xs = np.arange(w, dtype=np.float32) + 0.5

    def colour_ids(self, colours) -> np.ndarray:
        """Register colours (N, 3) and return their ids."""
        c = np.asarray(colours, np.float32).reshape(-1, 3)
        start = self.ncolours
        self.colours.append(c)
        self.ncolours += len(c)
        return np.arange(start, start + len(c), dtype=np.uint16)

    # -- projection helpers -------------------------------------------------------------
    def col(self, x_m: float, d: float) -> float:
        return self.vx + x_m * self.f / d

    def row(self, z_m: float, d: float) -> float:
        return self.h0 + (self.camh - z_m) * self.f / d

    def box(self, x0: float, x1: float, y0: float, y1: float):
        """Integer pixel box (at least 1x1) clipped to the canvas; None if off-canvas."""
        xa, xb = int(np.floor(x0)), int(np.ceil(x1))
        ya, yb = int(np.floor(y0)), int(np.ceil(y1))
        xb, yb = max(xb, xa + 1), max(yb, ya + 1)
        xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb, self.w), min(yb, self.h)
        if xa >= xb or ya >= yb:
            return None
        return ya, yb, xa, xb

    def paint(self, b, mask: np.ndarray | None, label: int, colour) -> None:
        ya, yb, xa, xb = b
        sub_l, sub_c = self.lab[ya:yb, xa:xb], self.cid[ya:yb, xa:xb]
        cid = self.colour_ids(colour)[0]
        sub_s = self.shade[ya:yb, xa:xb]
        if mask is None:
            sub_l[...] = label
            sub_c[...] = cid
            sub_s[...] = 1.0
        else:
            sub_l[mask] = label
            sub_c[mask] = cid
            sub_s[mask] = 1.0

    def rect(self, x0, x1, z0, z1, d, label, colour, ellipse=False):
        """Frontal rectangle (or ellipse) at depth ``d``: lateral [x0, x1] m, height [z0, z1] m."""
        px0, px1 = self.col(x0, d), self.col(x1, d)
        py0, py1 = self.row(z1, d), self.row(z0, d)
        b = self.box(px0, px1, py0, py1)
        if b is None:
            return
        mask = None
        if ellipse:
            ya, yb, xa, xb = b
            cx, cy = (px0 + px1) / 2, (py0 + py1) / 2
            rx, ry = max((px1 - px0) / 2, 0.5), max((py1 - py0) / 2, 0.5)
            ex = ((self.xs[xa:xb] - cx) / rx) ** 2
            ey = ((self.ys[ya:yb] - cy) / ry) ** 2
            mask = (ey[:, None] + ex[None, :]) <= 1.0
            if not mask.any():
                mask[mask.shape[0] // 2, mask.shape[1] // 2] = True
        self.paint(b, mask, label, colour)


def _ground(s: _Scene, p: dict) -> None:
    yg0 = int(np.floor(s.h0 + 0.5))
    rows = s.ys[yg0:]
    dg = s.camh * s.f / np.maximum(rows - s.h0, 1e-3)  # depth per ground row
    x_m = (s.xs - s.vx)[None, :] * (dg / s.f)[:, None]  # lateral metres per pixel
    a = x_m - p["c0"]
    absa = np.abs(a)
    side_w = np.where(a < 0, np.float32(p["swl"]), np.float32(p["swr"]))
    road = absa < p["rw"]
    side = (absa < side_w + np.float32(p["rw"])) & ~road
    lab = s.lab[yg0:]
    lab[...] = TERRAIN
    lab[side] = SIDEWALK
    lab[road] = ROAD
    ids = s.colour_ids([p["terrain_c"], p["side_c"], p["road_c"]])
    cid = s.cid[yg0:]
    cid[...] = ids[0]
    cid[side] = ids[1]
    cid[road] = ids[2]
    sh = s.shade[yg0:]
    # Lane marks (dashed) and edge lines: brighter paint, still "road".
    dash = (np.mod(dg / p["dash"], 1.0) < 0.45)[:, None]
    lane = np.zeros_like(road)
    for m in p["marks"]:
        lane |= (np.abs(a - m) < 0.07) & dash
    lane |= (np.abs(absa - (p["rw"] - 0.25)) < 0.06) & p["edge_lines"]
    lane &= road
    sh[lane] = 2.2
    # Curb (lighter band) and sidewalk tiles.
    curb = side & (absa < p["rw"] + 0.18)
    sh[curb] = 1.35
    tile_rows = (np.mod(dg / p["tile"], 1.0) < 0.07)[:, None]
    tile = side & ((np.mod(a / p["tile"], 1.0) < 0.07) | tile_rows)
    sh[tile] = 0.8
    # A facade shades part of the street (sun from one side).
    if p["shadow"] is not None:
        sh[a * np.float32(p["shadow_side"]) > p["shadow"]] *= 0.55


def _facades(s: _Scene, p: dict) -> None:
    rng = s.rng
    for side in (-1, 1):
        xf = p["c0"] + side * (p["rw"] + (p["swl"] if side < 0 else p["swr"]) + p["gap"][side])
        # Columns that see this facade: one side of the vanishing column.
        split = int(np.clip(np.floor(s.vx), 0, s.w))
        if (xf < 0) == (side < 0):
            ca, cb = (0, split) if xf < 0 else (min(split + 1, s.w), s.w)
        else:  # the camera stands beyond this facade's plane: it cannot be seen
            continue
        if cb - ca < 1:
            continue
        dx = s.xs[ca:cb] - s.vx
        dx = np.where(np.abs(dx) < 0.5, np.sign(xf) * 0.5, dx)
        d = (xf * s.f / dx).astype(np.float32)
        nseg = 24
        bounds = np.cumsum(rng.uniform(6, 28, nseg).astype(np.float32))
        kinds = rng.choice(4, nseg, p=[0.68, 0.17, 0.08, 0.07])  # building, trees, fence, open
        heights = rng.uniform(5, 32, nseg).astype(np.float32)
        seg = np.minimum(np.searchsorted(bounds, d), nseg - 1)
        kind = kinds[seg]
        hz = np.where(kind == 0, heights[seg], 0.0).astype(np.float32)
        base = s.h0 + s.camh * s.f / d
        ph = rng.uniform(0, 6.3, 2)
        bump = 0.5 * np.sin(d * 1.1 + ph[0]) + 0.5 * np.sin(d * 2.9 + ph[1])
        hv = np.where((kind == 1) | (kind == 2), rng.uniform(3, 11) * (1 + 0.18 * bump), 0.0)
        top = s.h0 + (s.camh - np.maximum(hz, hv)) * s.f / d
        ra = int(np.clip(np.floor(top.min()), 0, s.h))
        rb = int(np.clip(np.ceil(base.max()), 0, s.h))
        if rb <= ra:
            continue
        yy = s.ys[ra:rb, None]
        lab, cid, shade = s.lab[ra:rb, ca:cb], s.cid[ra:rb, ca:cb], s.shade[ra:rb, ca:cb]
        inside = (yy >= top[None, :]) & (yy < base[None, :])
        veg = inside & (hv > 0)[None, :]
        lab[veg] = VEGETATION
        cid[veg] = s.colour_ids(p["veg_c"])[0]
        bld = inside & (kind == 0)[None, :]
        lab[bld] = BUILDING
        seg_col = _FACADE_COLOURS[rng.integers(0, len(_FACADE_COLOURS), nseg)]
        seg_col = seg_col * rng.uniform(0.75, 1.15, (nseg, 1)).astype(np.float32)
        seg_ids = s.colour_ids(seg_col)[seg]
        cid[bld] = np.broadcast_to(seg_ids[None, :], bld.shape)[bld]
        shade[inside] = 1.0
        # Windows: a grid in facade coordinates (along-street d, height z).
        wsp = rng.uniform(2.2, 4.0, nseg).astype(np.float32)[seg]
        fh = np.float32(rng.uniform(2.8, 3.6))
        u = np.mod(d / wsp + seg * 0.37, 1.0)
        wcol = (u > 0.22) & (u < 0.78) & (kind == 0)
        z = s.camh - (yy - s.h0) * (d / s.f)[None, :]
        v = np.mod(z / fh, 1.0)
        win = bld & wcol[None, :] & (v > 0.3) & (v < 0.82) & (z > 3.2) & (z < hz[None, :] - 0.6)
        shade[win] = 0.35
        lit_col = (np.floor(d / wsp) * 7).astype(np.int64)
        lit = win & (((lit_col[None, :] + np.floor(z / fh).astype(np.int64) * 3) % 5) == 0)
        shade[lit] = 1.5
        shade[bld] *= p["facade_light"][side]
        # Fences in front of some tree gaps.
        if (kind == 2).any():
            fen = inside & (kind == 2)[None, :] & (z < 1.3)
            fen &= (np.mod(d / 0.35, 1.0) < 0.4)[None, :] | (z > 1.15) | (z < 0.1)
            lab[fen] = FENCE
            cid[fen] = s.colour_ids(p["fence_c"])[0]
            shade[fen] = 1.0


def _car(s: _Scene, x: float, d: float, colour: np.ndarray, rng: np.random.Generator) -> None:
    hw, l = 0.9 * rng.uniform(0.95, 1.1), 4.3
    cab_top = rng.uniform(1.4, 1.6)
    dark = (25, 25, 28)
    glass = colour * 0.25 + np.float32(30)
    # Shadow on the ground below the car.
    b = s.box(s.col(x - hw - 0.1, d), s.col(x + hw + 0.1, d), s.row(0, d + l), s.row(0, d - 0.4))
    if b is not None:
        s.shade[b[0] : b[1], b[2] : b[3]] *= 0.45
    # Visible side face (a plane along the street at lateral x -/+ hw).
    if abs(x) > hw + 0.2:
        xs_m = x - np.sign(x) * hw
        c0, c1 = sorted((s.col(xs_m, d), s.col(xs_m, d + l)))
        b = s.box(c0, c1, s.row(cab_top, d), s.row(0, d + l))
        if b is not None:
            ya, yb, xa, xb = b
            dx = s.xs[xa:xb] - s.vx
            dd = xs_m * s.f / np.where(np.abs(dx) < 1e-3, 1e-3, dx)
            yy = s.ys[ya:yb, None]
            zz = s.camh - (yy - s.h0) * (dd / s.f)[None, :]
            inside = (dd >= d)[None, :] & (dd <= d + l)[None, :]
            tt = (dd - d) / l
            roof = np.where((tt > 0.2) & (tt < 0.85), cab_top, 1.0)
            m = inside & (zz >= 0) & (zz <= roof[None, :])
            if m.any():
                s.paint(b, m, CAR, colour * 0.8)
                sh = s.shade[ya:yb, xa:xb]
                sh[m & (zz > 1.05)] = 0.35  # side windows
                axle = ((tt > 0.08) & (tt < 0.25)) | ((tt > 0.75) & (tt < 0.92))
                wheel = m & (zz < 0.4) & axle[None, :]
                sh[wheel] = 0.2
    # Rear (or front) face at depth d.
    s.rect(x - hw + 0.08, x - hw + 0.4, 0.0, 0.4, d, CAR, dark)
    s.rect(x + hw - 0.4, x + hw - 0.08, 0.0, 0.4, d, CAR, dark)
    s.rect(x - hw, x + hw, 0.3, 1.0, d, CAR, colour)
    s.rect(x - hw * 0.82, x + hw * 0.82, 1.0, cab_top, d, CAR, colour * 0.9)
    s.rect(x - hw * 0.7, x + hw * 0.7, 1.05, cab_top - 0.08, d, CAR, glass)
    s.rect(x - hw + 0.05, x - hw + 0.3, 0.75, 0.9, d, CAR, (200, 20, 20))
    s.rect(x + hw - 0.3, x + hw - 0.05, 0.75, 0.9, d, CAR, (200, 20, 20))
    s.rect(x - 0.26, x + 0.26, 0.42, 0.54, d, CAR, (225, 225, 215))


def _person(s: _Scene, x: float, d: float, rng: np.random.Generator) -> None:
    hp = rng.uniform(1.5, 1.9)
    cloth = rng.uniform(20, 200, 3).astype(np.float32)
    legs = rng.uniform(20, 120, 3).astype(np.float32)
    skin = np.array([225, 180, 150], np.float32) * rng.uniform(0.45, 1.05)
    stride = rng.uniform(0.02, 0.12)
    s.rect(x - 0.15 - stride, x - 0.03 - stride / 2, 0.0, 0.5 * hp, d, PERSON, legs)
    s.rect(x + 0.03 + stride / 2, x + 0.15 + stride, 0.0, 0.5 * hp, d, PERSON, legs)
    s.rect(x - 0.24, x + 0.24, 0.45 * hp, 0.86 * hp, d, PERSON, cloth, ellipse=True)
    s.rect(x - 0.11, x + 0.11, 0.86 * hp, hp, d, PERSON, skin, ellipse=True)


def _pole(s: _Scene, x: float, d: float, rng: np.random.Generator, sign: bool) -> None:
    hp = rng.uniform(3.5, 8.0)
    pw = rng.uniform(0.08, 0.16)
    grey = np.float32(rng.uniform(60, 170))
    s.rect(x - pw, x + pw, 0.0, hp, d - 0.01, POLE, (grey, grey, grey))
    if sign:
        sw = rng.uniform(0.3, 0.45)
        zc = rng.uniform(2.3, min(hp, 3.2))
        col = _SIGN_COLOURS[rng.integers(0, len(_SIGN_COLOURS))]
        round_sign = bool(rng.random() < 0.5)
        s.rect(x - sw, x + sw, zc - sw, zc + sw, d - 0.05, SIGN, col, ellipse=round_sign)


def _tree(s: _Scene, x: float, d: float, p: dict, rng: np.random.Generator) -> None:
    trunk = np.float32(rng.uniform(50, 90))
    s.rect(x - 0.14, x + 0.14, 0.0, 3.0, d, VEGETATION, (trunk, trunk * 0.8, trunk * 0.6))
    r = rng.uniform(1.2, 2.4)
    zc = rng.uniform(3.5, 5.5)
    for _ in range(3):
        ox, oz, rr = rng.uniform(-0.6, 0.6) * r, rng.uniform(-0.4, 0.4) * r, r * rng.uniform(0.6, 1)
        c = p["veg_c"] * np.float32(rng.uniform(0.8, 1.15))
        s.rect(x + ox - rr, x + ox + rr, zc + oz - rr, zc + oz + rr, d, VEGETATION, c, ellipse=True)


def _params(rng: np.random.Generator) -> dict:
    def tint(base, spread):
        factor = rng.uniform(1 - spread, 1 + spread, 3)
        return (np.asarray(base, np.float32) * factor).astype(np.float32)

    rw = rng.uniform(3.5, 7.5)
    lanes = int(max(1, round(rw / 1.8)))
    marks = [(-rw + 2 * rw * i / lanes) for i in range(1, lanes)]
    grey_road = rng.uniform(55, 115)
    p = {
        "rw": rw,
        "c0": rng.uniform(-0.6, 0.6) * rw,
        "swl": rng.uniform(1.5, 4.5),
        "swr": rng.uniform(1.5, 4.5),
        "gap": {side: rng.choice([0.0, rng.uniform(0.5, 6)]) for side in (-1, 1)},
        "marks": marks,
        "dash": rng.uniform(6, 12),
        "edge_lines": bool(rng.random() < 0.5),
        "tile": rng.uniform(0.4, 1.0),
        "road_c": tint([grey_road] * 3, 0.06),
        "side_c": tint([grey_road + rng.uniform(-10, 60)] * 3, 0.12),
        "terrain_c": tint([120, 140, 70], 0.25),
        "veg_c": tint([60, 100, 40], 0.3),
        "fence_c": tint([rng.uniform(80, 200)] * 3, 0.15),
        "facade_light": {-1: rng.uniform(0.55, 1.2), 1: rng.uniform(0.55, 1.2)},
        "shadow": None,
        "shadow_side": 1.0,
    }
    if rng.random() < 0.45:
        p["shadow_side"] = float(rng.choice([-1.0, 1.0]))
        p["shadow"] = rng.uniform(-rw, rw)
    return p


def generate_scene(
    seed: int, split: str, index: int, size: tuple[int, int] = (256, 512)
) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(image [H, W, 3] uint8 RGB, label [H, W] uint8 train ids / 255)``.

    Deterministic in ``(seed, split, index, size)``.
    """
    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise ValueError(f"synthetic scenes need at least 8x8 pixels, got {h}x{w}")
    rng = scene_rng(seed, split, index)
    s = _Scene(rng, h, w)
    p = _params(rng)
    # Sky: vertical gradient (blue or overcast).
    top = np.array([70, 120, 200] if rng.random() < 0.6 else [165, 170, 180], np.float32)
    top *= rng.uniform(0.8, 1.15, 3).astype(np.float32)
    bottom = np.array([215, 220, 230], np.float32) * np.float32(rng.uniform(0.85, 1.05))
    yg0 = int(np.floor(s.h0 + 0.5))
    t = np.clip(s.ys[:yg0] / max(s.h0, 1.0), 0, 1)[:, None, None]
    s.cid[:yg0] = s.colour_ids((top * (1 - t) + bottom * t).reshape(-1, 3))[:, None]
    _ground(s, p)
    _facades(s, p)

    # Objects, drawn far to near.
    objs = []
    dmin = s.camh * s.f / (h - s.h0) * 1.05
    for _ in range(rng.integers(1, 8)):  # cars in lanes or parked at the kerb
        if rng.random() < 0.35:
            xc = p["c0"] + rng.choice([-1, 1]) * (p["rw"] - 1.1)
        else:
            xc = p["c0"] + rng.uniform(-p["rw"] + 1.0, p["rw"] - 1.0)
        objs.append(("car", xc, dmin + 1 + 60 * rng.random() ** 1.5))
    for _ in range(rng.integers(0, 7)):
        side = rng.choice([-1, 1])
        sw = p["swl"] if side < 0 else p["swr"]
        xc = p["c0"] + side * (p["rw"] + rng.uniform(0.4, max(sw - 0.3, 0.5)))
        objs.append(("person", xc, dmin + 40 * rng.random() ** 1.3))
    for _ in range(rng.integers(2, 9)):
        side = rng.choice([-1, 1])
        objs.append(("pole", p["c0"] + side * (p["rw"] + 0.45), dmin + 60 * rng.random()))
    for _ in range(rng.integers(0, 5)):
        side = rng.choice([-1, 1])
        sw = p["swl"] if side < 0 else p["swr"]
        objs.append(("tree", p["c0"] + side * (p["rw"] + sw - 0.6), dmin + 2 + 50 * rng.random()))
    objs.sort(key=lambda o: -o[2])
    for kind, xc, d in objs:
        if kind == "car":
            colour = _CAR_COLOURS[rng.integers(0, len(_CAR_COLOURS))]
            _car(s, xc, d, colour * np.float32(rng.uniform(0.8, 1.1)), rng)
        elif kind == "person":
            _person(s, xc, d, rng)
        elif kind == "pole":
            _pole(s, xc, d, rng, sign=bool(rng.random() < 0.55))
        else:
            _tree(s, xc, d, p, rng)

    # Ego-vehicle bonnet at the bottom (ignore), like Cityscapes.
    if rng.random() < 0.25:
        hb = int(h * rng.uniform(0.05, 0.12))
        if hb > 0:
            arc = (np.abs(s.xs - w / 2) / (w / 2)) ** 2 * hb * 0.6
            m = s.ys[h - hb :, None] > (h - hb + arc[None, :])
            s.lab[h - hb :][m] = IGNORE_INDEX
            s.cid[h - hb :][m] = s.colour_ids([rng.uniform(20, 90)] * 3)[0]
            s.shade[h - hb :][m] = 1.0

    # Lighting, texture and sensor noise.
    light = 1 + 0.18 * _lowfreq(rng, h, w, max(8, w // 6))
    amp = _TEX[s.lab]
    # Uniform noise in [-1.7, 1.7] has unit variance and is much cheaper than Gaussian noise.
    tex = rng.random((h, w), dtype=np.float32)
    tex -= 0.5
    tex *= 3.46
    tex += _lowfreq(rng, h, w, max(4, w // 48)) * 0.8
    tex *= amp
    tex += 1
    gain = (rng.uniform(0.65, 1.25) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    mult = s.shade
    mult *= light
    mult *= tex
    table = np.concatenate(s.colours) * gain
    img = table[s.cid]
    img *= mult[..., None]
    noise = rng.random((h, w), dtype=np.float32)
    noise -= 0.5
    noise *= np.float32(rng.uniform(2, 12))
    img += noise[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), s.lab


def write_folder_tree(
    out: str | Path,
    num_train: int,
    num_val: int,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    progress: bool | None = None,
) -> dict:
    """Write scenes as a ``folder``-preset tree (``images/{split}``, ``labels/{split}``,
    ``dataset.yaml``) so users can look at them and try the folder preset."""
    import sys

    import yaml
    from tqdm import tqdm

    from fasterseg.data.io import write_image_png, write_label_png
    from fasterseg.data.labels import synthetic_label_set
    from fasterseg.utils.io import write_text

    out = Path(out)
    ls = synthetic_label_set()
    spec = {
        "name": "synthetic",
        "classes": ls.class_names,
        "palette": [list(c) for c in ls.palette],
        "ignore_index": IGNORE_INDEX,
        "image_suffix": ".png",
        "label_suffix": ".png",
    }
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    written = {}
    for split, n in (("train", num_train), ("val", num_val)):
        for i in tqdm(range(n), desc=f"synth {split}", disable=disable, leave=False):
            image, label = generate_scene(seed, split, i, size)
            write_image_png(out / "images" / split / f"synth_{i:05d}.png", image)
            write_label_png(out / "labels" / split / f"synth_{i:05d}.png", label)
        written[split] = n
    header = (
        "# Folder-preset dataset written by `fasterseg data synth`.\n"
        "# Labels: single-channel PNGs of class indices; 255 = ignore (ego-vehicle bonnet).\n"
    )
    write_text(out / "dataset.yaml", header + yaml.safe_dump(spec, sort_keys=False))
    return {"root": str(out), "splits": written, "size": list(size), "seed": seed}
