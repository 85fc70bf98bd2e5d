"""Phone photos as people take them in a hurry: the generator's `hardphoto` mode (issue #23).

A drawn page (RGB, page pixels) is bowed and folded like paper, shaded by a hard-edged shadow and
by light falling off across it, laid on a cluttered table (wood grain, other papers at the edge),
photographed at an angle (each corner up to ±11 % of the page width off), held by a thumb over a
margin, shaken (motion blur) and shrunk to about 100 dpi across the page. Each factor can be
asked for alone (tests and the per-factor bench) or all together, drawn at random within the
bounds below. `to_image` maps page points to image points through the same bow, fold and
perspective, so the truth's cell boxes follow the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

FACTORS = ("perspective", "bow", "fold", "shadow", "falloff", "blur", "lowres", "clutter", "thumb")

MAX_CORNER_SHIFT = 0.11  # of the page width, each corner, each axis
MAX_BOW = 0.01  # of the page height: how far the middle of a row moves from its ends
MAX_FOLD_SHIFT = 0.004  # of the page width: the half below the crease slides sideways
SHADOW_DARKNESS = (0.30, 0.50)  # the share of light a hard shadow takes away
BLUR_PX = (3, 7)  # motion blur length in image pixels
LOW_DPI = (95, 110)  # dpi across the page with "lowres"; else 120-145 as the gentle photos
PAGE_MM_HIGH = 297.0

PointMap = Callable[[np.ndarray], np.ndarray]  # (N, 2) page points -> (N, 2) image points


@dataclass(frozen=True)
class _Paper:
    """The page's own distortions, in page pixels: a bow (rows bend) and a fold (a crease)."""

    h: int
    w: int
    bow: float = 0.0  # px at the page's middle column, signed
    crease_y: float = -1.0  # px; < 0: no fold
    fold_shift: float = 0.0  # px the part below the crease moves to the right

    def dy(self, x: np.ndarray) -> np.ndarray:
        u = 2.0 * x / self.w - 1.0
        return self.bow * (1.0 - u * u)

    def shift(self, y: np.ndarray) -> np.ndarray:
        if self.crease_y < 0:
            return np.zeros_like(y)
        return self.fold_shift * 0.5 * (1.0 + np.tanh((y - self.crease_y) / 4.0))  # a crease two pixels wide

    def forward(self, pts: np.ndarray) -> np.ndarray:
        x, y = pts[:, 0], pts[:, 1]
        y2 = y + self.dy(x)
        return np.stack([x + self.shift(y2), y2], axis=1)

    def apply(self, page: np.ndarray, paper_color: tuple[int, int, int]) -> np.ndarray:
        """The page with the bow and the fold (each an exact inverse map, one after the other)."""
        if not self.bow and self.crease_y < 0:
            return page
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        out = page
        if self.bow:
            out = cv2.remap(out, xx, (yy - self.dy(xx)).astype(np.float32), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=paper_color)
        if self.crease_y >= 0:
            out = cv2.remap(out, (xx - self.shift(yy)).astype(np.float32), yy, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=paper_color)
            band = np.exp(-((yy[:, :1] - self.crease_y) / 3.0) ** 2)  # the crease catches less light
            out = np.clip(out.astype(np.float32) * (1.0 - 0.18 * band[..., None]), 0, 255).astype(np.uint8)
        return out


def _shadow(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A hard-edged shadow (a phone or a hand) over a part of the page: the light left, 0..1."""
    side = int(rng.integers(4))
    depth = rng.uniform(0.25, 0.55)  # how far into the page it reaches
    a, b = sorted(rng.uniform(-0.2, 1.2, 2))
    if side in (0, 2):  # from the top or the bottom edge
        edge = h * depth if side == 0 else h * (1 - depth)
        y_far = 0 if side == 0 else h
        poly = [(a * w, y_far), (b * w, y_far), (b * w + rng.normal(0, 0.05 * w), edge),
                (a * w + rng.normal(0, 0.05 * w), edge + rng.normal(0, 0.05 * h))]
    else:  # from the left or the right edge
        edge = w * depth if side == 3 else w * (1 - depth)
        x_far = 0 if side == 3 else w
        poly = [(x_far, a * h), (x_far, b * h), (edge, b * h + rng.normal(0, 0.05 * h)),
                (edge + rng.normal(0, 0.05 * w), a * h + rng.normal(0, 0.05 * h))]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.array(poly, np.int32)], 255)
    soft = cv2.GaussianBlur(mask, (0, 0), rng.uniform(1.0, 2.5)).astype(np.float32) / 255.0  # a hard edge
    light: np.ndarray = 1.0 - rng.uniform(*SHADOW_DARKNESS) * soft
    return light


def _falloff(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Light falling off across the page from one side (a window, a ceiling lamp)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle)) + 0.5
    return 1.0 - rng.uniform(0.25, 0.45) * np.clip(t, 0, 1) ** 1.5


def _table(out_h: int, out_w: int, rng: np.random.Generator, clutter: bool) -> np.ndarray:
    if not clutter:
        base = np.array(rng.choice([(120, 90, 60), (70, 70, 75), (150, 140, 125), (40, 45, 50)]), np.float32)
        plain = np.clip(base + rng.normal(0, 12, (out_h, out_w, 1)), 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(plain, (0, 0), 3)
    # wood grain: bands along one direction, wavy, of a brown drawn per table
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    a = rng.uniform(0, np.pi)
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    grain = np.sin(u / rng.uniform(6, 14) + 3 * np.sin(v / rng.uniform(60, 140))) * 0.5 + 0.5
    brown = np.array(rng.choice([(150, 105, 65), (120, 80, 50), (185, 145, 100)]), np.float32)
    wood = brown * (0.85 + 0.2 * grain[..., None]) + rng.normal(0, 6, (out_h, out_w, 1))
    table = np.clip(wood, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):  # other papers at the edge of the frame
        pw, ph = rng.uniform(0.3, 0.6) * out_w, rng.uniform(0.3, 0.6) * out_h
        cx = rng.choice([rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.1)]) * out_w
        cy = rng.uniform(0, 1) * out_h
        box = cv2.boxPoints(((float(cx), float(cy)), (float(pw), float(ph)), float(rng.uniform(-30, 30))))
        tone = int(rng.uniform(200, 245))
        cv2.fillPoly(table, [box.astype(np.int32)], (tone, tone, int(tone * 0.97)))
        for k in range(8):  # a few lines of print on it
            y = int(cy - ph / 2 + ph * (k + 1) / 10)
            cv2.line(table, (int(cx - pw / 3), y), (int(cx + pw / 3), y), (90, 90, 90), 2)
    return cv2.GaussianBlur(table, (0, 0), 1.2)


def _thumb(out: np.ndarray, quad: np.ndarray, rng: np.random.Generator) -> None:
    """A thumb over the page's left or right margin, pressing it flat."""
    side = int(rng.integers(2))
    top, bottom = (quad[0], quad[3]) if side == 0 else (quad[1], quad[2])
    t = rng.uniform(0.3, 0.8)
    edge = top + (bottom - top) * t
    inward = (quad[1] - quad[0]) if side == 0 else (quad[0] - quad[1])
    inward = inward / max(np.linalg.norm(inward), 1.0)
    width = np.linalg.norm(quad[1] - quad[0])
    centre = edge + inward * width * rng.uniform(0.0, 0.03)  # over the margin, short of the grid
    axes = (int(width * rng.uniform(0.05, 0.065)), int(width * rng.uniform(0.03, 0.04)))
    angle = float(np.degrees(np.arctan2(inward[1], inward[0])))
    skin = tuple(int(c) for c in rng.choice([(205, 160, 135), (170, 120, 90), (120, 85, 60), (230, 190, 165)]))
    cv2.ellipse(out, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, skin, -1, cv2.LINE_AA)


def _motion_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(BLUR_PX[0], BLUR_PX[1] + 1))
    line = np.zeros((length, length), np.float32)
    line[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(line, rot, (length, length))
    kernel = (kernel / max(float(kernel.sum()), 1e-6)).astype(np.float32)
    blurred: np.ndarray = cv2.filter2D(img, -1, kernel)
    return blurred


def hard_photo(img: np.ndarray, rng: np.random.Generator, factors: tuple[str, ...] = FACTORS,
               ) -> tuple[np.ndarray, PointMap, dict[str, float]]:
    """Photograph a drawn page under `factors` (each of FACTORS); the image, its point map, facts."""
    unknown = set(factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"unknown photo factors: {sorted(unknown)}")
    on = set(factors)
    h, w = img.shape[:2]
    facts: dict[str, float] = {}
    paper_color = (250, 250, 248)
    paper = _Paper(h, w,
                   bow=float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * MAX_BOW * h) if "bow" in on else 0.0,
                   crease_y=float(rng.uniform(0.4, 0.6) * h) if "fold" in on else -1.0,
                   fold_shift=float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * MAX_FOLD_SHIFT * w)
                   if "fold" in on else 0.0)
    facts.update(bow_px=round(paper.bow, 1), crease_y=round(paper.crease_y, 1),
                 fold_shift_px=round(paper.fold_shift, 1))
    page = paper.apply(img, paper_color)
    light: np.ndarray = np.ones((h, w), np.float32)
    if "shadow" in on:
        light *= _shadow(h, w, rng)
    if "falloff" in on:
        light *= _falloff(h, w, rng)
    light *= rng.uniform(0.85, 1.0)
    page = np.clip(page.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)

    dpi = rng.uniform(*LOW_DPI) if "lowres" in on else rng.uniform(120, 145)
    page_h_out = dpi * PAGE_MM_HIGH / 25.4
    out_h = int(page_h_out / rng.uniform(0.80, 0.9))
    out_w = int(out_h * 0.75)
    scale = page_h_out / h
    pw, ph = w * scale, h * scale
    rect = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])
    a = np.deg2rad(rng.uniform(-6, 6))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    quad = rect @ rot.T
    if "perspective" in on:
        jitter = rng.uniform(-MAX_CORNER_SHIFT, MAX_CORNER_SHIFT, quad.shape) * pw
    else:
        jitter = rng.normal(0, pw * 0.012, quad.shape)
    quad = quad + jitter
    # the page stays in the frame: shrink it around the middle if a corner left it
    span = np.abs(quad).max(axis=0)
    fit = min(1.0, (out_w / 2 - 4) / span[0], (out_h / 2 - 4) / span[1])
    quad = quad * fit + [out_w / 2, out_h / 2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    H = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    facts.update(dpi=round(float(dpi * fit), 1), corner_shift=round(float(np.abs(jitter).max() / pw), 3))

    out = _table(out_h, out_w, rng, "clutter" in on)
    warped = cv2.warpPerspective(page, H, (out_w, out_h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), H, (out_w, out_h))
    out = np.where(mask[..., None] > 127, warped, out)
    if "thumb" in on:
        _thumb(out, quad, rng)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 0.9))
    if "blur" in on:
        out = _motion_blur(out, rng)
    noisy = out.astype(np.float32) + rng.normal(0, rng.uniform(3, 6), out.shape[:2])[..., None]
    out = np.clip(noisy, 0, 255).astype(np.uint8)

    def to_image(pts: np.ndarray) -> np.ndarray:
        bent = paper.forward(np.asarray(pts, np.float64))
        mapped: np.ndarray = cv2.perspectiveTransform(bent[None], H)[0]
        return mapped

    return out, to_image, facts
