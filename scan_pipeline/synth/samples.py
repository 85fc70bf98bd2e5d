"""The ground-truth generator: filled petition sheets, scanned or photographed, with their truth.

Everything here is invented: names are drawn at random from lists of common French names, postal
codes from the real list, digits from the MNIST training digits set aside for the generator
(never those a model trains on). Sheets vary the way sheets printed by many groups vary: scale,
margins, column widths, row heights; then they are written by hand (fonts, real digit images,
scribbled signatures; for benchmarks, optionally crops of real handwritten names) and degraded
(resolution, rotation, upside-down, gray, bilevel, noise, phone photos in perspective on a table).
"""

from __future__ import annotations

import glob
import io
import json
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scan_pipeline.core.errors import MissingDependencyError, OutputError, PipelineError
from scan_pipeline.core.records import Box
from scan_pipeline.core.template import Template
from scan_pipeline.synth.photos import FACTORS, PointMap, hard_photo
from scan_pipeline.synth.sheet import PageLayout, SheetStyle, render_page

MODES = ("scan", "gray", "bilevel", "photo")  # the default set: the bench's columns
PHOTO_MODES = ("photo", "hardphoto")
ALL_MODES = (*MODES, "hardphoto")  # hardphoto: photos taken in a hurry (photos.py)
FORMATS = ("pdf", "png", "jpg", "tiff")
GENERATOR_VERSION = 1

# Debian packages: fonts-dkg-handwriting fonts-breip fonts-humor-sans fonts-rufscript
# fonts-comic-neue fonts-dancingscript
HANDWRITING_FONTS = (
    "truetype/fifthhorseman/dkg.ttf", "truetype/fifthhorseman/dkgBd.ttf", "truetype/fifthhorseman/dkgIt.ttf",
    "truetype/breip/Breip.ttf", "truetype/humor-sans/Humor-Sans.ttf", "truetype/rufscript/Rufscript010.ttf",
    "opentype/comic-neue/ComicNeue-Regular.otf", "opentype/comic-neue/ComicNeue-Italic.otf",
    "opentype/comic-neue/ComicNeue-Light.otf", "opentype/dancingscript/DancingScript-Regular.otf",
    "opentype/dancingscript/DancingScript-Bold.otf",
)
FONT_PACKAGES = ("fonts-dkg-handwriting fonts-breip fonts-humor-sans fonts-rufscript "
                 "fonts-comic-neue fonts-dancingscript")

INKS = ((25, 35, 140), (20, 20, 28), (15, 30, 95), (40, 40, 60))


@lru_cache(maxsize=1)
def handwriting_fonts() -> tuple[str, ...]:
    found = tuple(p for rel in HANDWRITING_FONTS for p in glob.glob(f"/usr/share/fonts/{rel}"))
    if not found:
        raise MissingDependencyError(
            "no handwriting font is installed, the generator cannot write names",
            hint=f"apt-get install {FONT_PACKAGES} (or run `make install`)")
    return found


@cache
def _hfont(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@cache
def _covers(path: str, text: str) -> bool:
    """Whether the font has a glyph for every character (some lack accents)."""
    font = _hfont(path, 32)
    notdef = np.asarray(font.getmask("\ue000"))
    return all(ch == " " or not np.array_equal(np.asarray(font.getmask(ch)), notdef) for ch in set(text))


@lru_cache(maxsize=1)
def _names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = json.loads(
        resources.files("scan_pipeline").joinpath("data/synth_names.json").read_text("utf-8"))
    return names


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("scan_pipeline").joinpath("data/digits_generator.npz").open("rb") as fh:
        data = np.load(fh)
        return data["images"], data["labels"]


@dataclass(frozen=True)
class Person:
    person_id: str
    given: str
    surname: str
    postal_code: str
    crops: tuple[int, ...] = ()  # indices into NameCrops: the name is written with these real crops

    @property
    def canonical(self) -> str:
        """The name as the ledger writes it: NOM Prénom."""
        return f"{self.surname.upper()} {self.given}"


REAL_NAME_SHARE = 0.5  # with NameCrops, this share of the new signers write with real handwriting


@dataclass(frozen=True)
class NameCrops:
    """Crops of real handwritten words and their labels (one word each), to write names with in
    benchmarks: a name is two of them side by side, the first as the surname. The crops are read
    from wherever the CSV says and never copied into the corpus but as ink on the sheets."""

    images: tuple[np.ndarray, ...]  # gray, dark ink on white, trimmed to the ink
    labels: tuple[str, ...]
    source_sha256: str = ""  # of the CSV, for the truth's record of what wrote the names

    @classmethod
    def read(cls, csv_path: Path) -> NameCrops:
        """A CSV with columns file,label (file relative to the CSV's folder, or absolute)."""
        import csv
        import hashlib

        try:
            raw = csv_path.read_bytes()
            rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineError(f"cannot read {csv_path}: {exc}", hint="give a CSV with columns file,label") from exc
        images, labels = [], []
        for n, row in enumerate(rows, 2):
            path = csv_path.parent / (row.get("file") or "")
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if row.get("file") else None
            label = " ".join((row.get("label") or "").split())
            if image is None or not label or " " in label:
                raise PipelineError(f"{csv_path}, line {n}: no readable image at {path}, or not one word as label",
                                    hint="each line names an image file and the one word written on it")
            images.append(image)
            labels.append(label)
        if len(labels) < 2:
            raise PipelineError(f"{csv_path}: at least two crops are needed (a name is written with two)")
        return cls(tuple(images), tuple(labels), hashlib.sha256(raw).hexdigest())


# --- drawing ink -----------------------------------------------------------------------------

def _blend(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int, ink: tuple[int, int, int]) -> None:
    """Composite an ink mask (0..1) onto the RGB canvas at (x, y), clipped to the canvas."""
    h, w = alpha.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (region * (1 - a) + np.array(ink, np.float32) * a).astype(np.uint8)


def _text_mask(text: str, font_path: str, size: int, angle: float, stroke: int) -> np.ndarray:
    font = _hfont(font_path, size)
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    img = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)  # type: ignore[arg-type]  # PIL types getbbox as floats; ints here
    ImageDraw.Draw(img).text((2 - x0, 2 - y0), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(img, np.float32) / 255.0


def write_text(canvas: np.ndarray, box: Box, text: str, rng: np.random.Generator, ink: tuple[int, int, int],
               font_path: str, pen: str | None = None) -> None:
    """`pen`: None (the font's own strokes) or one of PENS (see `pen_strokes`)."""
    cap = box.height * rng.uniform(0.42, 0.62)
    size = max(8, int(cap * 1.35))
    stroke = int(rng.integers(0, 2)) if size > 30 else 0
    angle = float(rng.normal(0, 1.2))
    mask = _text_mask(text, font_path, size, angle, 0 if pen == "hairline" else stroke)
    _place(canvas, box, pen_strokes(mask, pen, rng), rng, ink)


def write_crops(canvas: np.ndarray, box: Box, crops: list[np.ndarray], rng: np.random.Generator,
                ink: tuple[int, int, int]) -> None:
    """Write words with crops of real handwriting (dark on white), side by side, at a size handwriting
    has in the cell."""
    height = box.height * rng.uniform(0.4, 0.6)
    parts, letter_gap = [], 0
    for crop in crops:
        alpha = 255.0 - crop.astype(np.float32)
        # paper to 0, ink to 1; the scanned strokes' gray edges darkened, as a pen's ink is
        alpha = np.clip(alpha / max(float(alpha.max()), 1.0) * 1.4 - 0.1, 0.0, 1.0) ** 0.7
        f = height * rng.uniform(0.9, 1.1) / crop.shape[0]
        parts.append(cv2.resize(alpha, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                                interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR))
        inked = np.flatnonzero((parts[-1] > 0.3).any(axis=0))
        letter_gap = max(letter_gap, int(np.diff(inked).max()) - 1 if len(inked) > 1 else 0)
    # a word space: about a letter wide, and wider than the writer leaves between letters (block
    # capitals are often written apart), else no reader, person or program, could tell the words
    gap = int(max(height * rng.uniform(0.5, 1.0), letter_gap * rng.uniform(1.3, 2.0)))
    mask = np.zeros((max(p.shape[0] for p in parts), sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)),
                    np.float32)
    x = 0
    for part in parts:
        y = (mask.shape[0] - part.shape[0]) // 2
        mask[y:y + part.shape[0], x:x + part.shape[1]] = part
        x += part.shape[1] + gap
    _place(canvas, box, mask, rng, ink)


def _place(canvas: np.ndarray, box: Box, mask: np.ndarray, rng: np.random.Generator,
           ink: tuple[int, int, int]) -> None:
    limit = box.width * rng.uniform(0.8, 0.95)
    if mask.shape[1] > limit:  # people write smaller when the cell is short
        scale = limit / mask.shape[1]
        mask = cv2.resize(mask, (max(1, int(mask.shape[1] * scale)), max(1, int(mask.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    x = box.x0 + int(rng.uniform(0.02, 0.12) * box.width)
    x = min(x, box.x1 - mask.shape[1] - 2) if mask.shape[1] < box.width else box.x0
    y = box.y0 + (box.height - mask.shape[0]) // 2 + int(rng.normal(0, box.height * 0.06))
    _blend(canvas, mask, x, y, ink)


def write_digits(canvas: np.ndarray, box: Box, written: str, rng: np.random.Generator,
                 ink: tuple[int, int, int], pen: str | None = None) -> list[int]:
    """Write a postal code with real handwritten digit images (MNIST, generator part). Returns the
    index in `_digits()` of each digit image written, in order (benchmarks trace errors to images).
    `pen`: None (the digit images' strokes) or one of PENS (see `pen_strokes`)."""
    images, labels = _digits()
    used: list[int] = []
    h = int(box.height * rng.uniform(0.5, 0.72))
    x = box.x0 + int(box.width * rng.uniform(0.04, 0.15))
    gap_base = rng.uniform(0.0, 0.3)
    parts: list[np.ndarray | None] = []
    for ch in written:
        if ch == " ":
            parts.append(None)
            continue
        pool = np.flatnonzero(labels == int(ch))
        used.append(int(rng.choice(pool)))
        digit = images[used[-1]].astype(np.float32) / 255.0
        ys, xs = np.nonzero(digit > 0.2)
        digit = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        w = max(2, int(digit.shape[1] * h / digit.shape[0]))
        parts.append(np.clip(cv2.resize(digit, (w, h), interpolation=cv2.INTER_LINEAR) * 1.3, 0, 1))
    total = sum(p.shape[1] if p is not None else h // 2 for p in parts) + len(parts) * gap_base * h * 0.5
    if x + total > box.x1:  # shrink to fit the cell
        scale = (box.x1 - box.x0) * 0.9 / total
        parts = [None if p is None else cv2.resize(p, (max(2, int(p.shape[1] * scale)), max(2, int(h * scale))))
                 for p in parts]
        h = int(h * scale)
        x = box.x0 + 2
    for part in parts:
        if part is None:
            x += h // 2
            continue
        y = box.y0 + (box.height - part.shape[0]) // 2 + int(rng.normal(0, box.height * 0.04))
        _blend(canvas, part if pen is None else pen_strokes(part, pen, rng), x, y, ink)
        x += part.shape[1] + int(h * (gap_base + rng.uniform(-0.08, 0.12)) * 0.5)
    return used


def write_signature(canvas: np.ndarray, box: Box, rng: np.random.Generator, ink: tuple[int, int, int],
                    thickness: int, pen: str | None = None) -> None:
    """A scribbled signature, sometimes crossing the cell's lines. `pen`: None or one of PENS (a
    hairline pen draws 1 px strokes whatever `thickness`)."""
    if pen == "hairline":
        thickness = 1
    n = int(rng.integers(5, 12))
    xs = np.sort(rng.uniform(0.08, 0.92, n)) + rng.normal(0, 0.05, n)
    spill = 0.25 if rng.random() < 0.15 else 0.0
    ys = rng.uniform(0.2 - spill, 0.8 + spill, n)
    t = np.linspace(0, n - 1, n * 12)
    px = np.interp(t, np.arange(n), xs) * box.width + box.x0
    py = (np.interp(t, np.arange(n), ys) + 0.08 * np.sin(t * rng.uniform(2, 5))) * box.height + box.y0
    pts = np.stack([px, py], axis=1).astype(np.int32)
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.polylines(mask, [pts], False, 255, thickness, cv2.LINE_AA)
    if rng.random() < 0.5:  # an underline or flourish
        y = int(box.y0 + box.height * rng.uniform(0.65, 0.85))
        cv2.line(mask, (int(px.min()), y), (int(px.max()), y + int(rng.normal(0, 3))), 255, thickness, cv2.LINE_AA)
    ys_, xs_ = np.nonzero(mask)
    if len(xs_):
        sub = mask[ys_.min():ys_.max() + 1, xs_.min():xs_.max() + 1].astype(np.float32) / 255.0
        if pen == "faint":
            sub = pen_strokes(sub, pen, rng)
        _blend(canvas, sub, int(xs_.min()), int(ys_.min()), ink)


def strike_row(canvas: np.ndarray, boxes: dict[str, Box], rng: np.random.Generator, ink: tuple[int, int, int],
               thickness: int, pen: str | None = None) -> None:
    """A signature withdrawn: a line through the row, or a cross over it (`pen` as write_signature's)."""
    if pen == "hairline":
        thickness = 0  # the line below is drawn thickness + 1 wide
    left, right = boxes["name"], boxes["signature"]
    mask = np.zeros(canvas.shape[:2], np.uint8)
    if rng.random() < 0.7:
        y0 = left.y0 + int(left.height * rng.uniform(0.3, 0.7))
        y1 = right.y0 + int(right.height * rng.uniform(0.3, 0.7))
        cv2.line(mask, (left.x0 + int(rng.uniform(0, 0.1) * left.width), y0),
                 (right.x1 - int(rng.uniform(0, 0.1) * right.width), y1), 255, thickness + 1, cv2.LINE_AA)
    else:
        cv2.line(mask, (left.x0, left.y0), (right.x1, right.y1), 255, max(1, thickness), cv2.LINE_AA)
        cv2.line(mask, (left.x0, left.y1), (right.x1, right.y0), 255, max(1, thickness), cv2.LINE_AA)
    _blend(canvas, mask.astype(np.float32) / 255.0, 0, 0, ink)


# --- light pens and artefacts, for benchmarks of what is writing -------------------------------

PENS = ("hairline", "faint")  # hairline: 1 px strokes; faint: light gray (pencil) ink with a grain
FAINT_GRAY = (150, 190)  # the faint pen's ink, gray level
ARTEFACTS = ("specks", "line_fragment", "shadow", "fold", "pen_touch")  # marks that are not writing


def thin(mask: np.ndarray) -> np.ndarray:
    """The 1 px centre lines of a binary mask (Zhang-Suen thinning), as 0/1 uint8."""
    img = np.pad((mask > 0).astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [np.roll(np.roll(img, -dy, 0), -dx, 1) for dy, dx in
                 ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]
            count = sum(p)
            ring = p + p[:1]
            transitions = sum(((a == 0) & (b == 1)).astype(np.uint8) for a, b in zip(ring, ring[1:]))
            if step == 0:
                keep = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
            else:
                keep = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
            drop = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & keep
            if drop.any():
                img[drop] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def pen_strokes(alpha: np.ndarray, pen: str | None, rng: np.random.Generator) -> np.ndarray:
    """An ink mask (0..1) as a pen of PENS draws it: hairline, the strokes' 1 px centre lines; faint,
    the strokes with a pencil's grain (the ink colour is the caller's: see `faint_ink`). None: as is."""
    if pen is None:
        return alpha
    if pen == "hairline":
        return thin(alpha > 0.45).astype(np.float32)
    if pen == "faint":
        return (alpha * rng.uniform(0.8, 1.0, alpha.shape)).astype(np.float32)
    raise ValueError(f"unknown pen {pen!r} (known: {', '.join(PENS)})")


def faint_ink(rng: np.random.Generator) -> tuple[int, int, int]:
    g = int(rng.integers(FAINT_GRAY[0], FAINT_GRAY[1] + 1))
    return (g, g, g)


def _shade(canvas: np.ndarray, region: Box, darkness: np.ndarray) -> None:
    """Darken `region` of the canvas by `darkness` (0..1 of the pixel's value, region-sized), or lighten
    it where darkness is negative."""
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(region.x0, 0), max(region.y0, 0), min(region.x1, W), min(region.y1, H)
    if x0 >= x1 or y0 >= y1:
        return
    d = darkness[y0 - region.y0:y1 - region.y0, x0 - region.x0:x1 - region.x0, None]
    part = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(part * (1 - d), 0, 255).astype(np.uint8)


def put_artefact(canvas: np.ndarray, boxes: dict[str, Box], kind: str, rng: np.random.Generator,
                 dpi: float) -> None:
    """Put on a row (its cell boxes on the canvas) a mark that is not writing (one of ARTEFACTS):

    - specks: 3 to 15 dust specks or toner dots (up to ~5 px across at 200 dpi) over its cells;
    - line_fragment: a piece of a ruled line doubled a few pixels inside a cell, a row of dashes left
      beside a line by a worn printer, or a short piece of a column line doubled;
    - shadow: a shadow's soft edge crossing the row (steep, or along it), 15-45 % darker beyond it;
    - fold: a crease across the row (along it, or across one cell), a soft line 15-60 levels darker
      with a lighter side;
    - pen_touch: one dot or a tiny tick of pen ink in one cell.
    """
    k = dpi / 200.0
    cells = [boxes[c] for c in ("name", "postal_code", "signature")]
    row = Box(boxes["row_number"].x0, min(b.y0 for b in cells), cells[-1].x1, max(b.y1 for b in cells))
    h = row.height
    if kind == "specks":
        mask = np.zeros(canvas.shape[:2], np.uint8)
        for _ in range(int(rng.integers(3, 16))):
            c = cells[int(rng.integers(3))]
            x, y = int(rng.uniform(c.x0, c.x1)), int(rng.uniform(c.y0 + 2, c.y1 - 2))
            r = (rng.uniform(0.4, 1.1) if rng.random() < 0.7 else rng.uniform(1.1, 2.5)) * k
            cv2.ellipse(mask, ((x, y), (2 * r * rng.uniform(0.6, 1.4), 2 * r), float(rng.uniform(0, 180))),
                        int(rng.uniform(120, 255)), -1, cv2.LINE_AA)
        _blend(canvas, mask.astype(np.float32) / 255.0, 0, 0, (20, 20, 20))
    elif kind == "line_fragment":
        mask = np.zeros(canvas.shape[:2], np.uint8)
        c = cells[int(rng.integers(3))]
        t = max(1, int(round(rng.uniform(0.15, 0.35) * dpi / 25.4)))  # a printed line, 0.15-0.35 mm
        variant = rng.choice(["doubled", "dashes", "column"])
        if variant == "doubled":
            off = int(rng.uniform(2, 5) * k) + t
            y = c.y0 + off if rng.random() < 0.5 else c.y1 - off
            length = int(c.width * rng.uniform(0.05, 0.5))
            x = int(rng.uniform(c.x0, max(c.x0 + 1, c.x1 - length)))
            cv2.line(mask, (x, y), (x + length, y + int(rng.integers(-1, 2))), 255, t)
        elif variant == "dashes":
            off = int(rng.uniform(1, 4) * k) + t
            y = c.y0 + off if rng.random() < 0.5 else c.y1 - off
            x = int(rng.uniform(c.x0, c.x0 + c.width * 0.7))
            for _ in range(int(rng.integers(2, 6))):
                length = int(rng.uniform(3, 15) * k)
                cv2.line(mask, (x, y), (x + length, y), 255, t)
                x += length + int(rng.uniform(3, 20) * k)
        else:
            off = int(rng.uniform(2, 5) * k) + t
            x = c.x0 + off if rng.random() < 0.5 else c.x1 - off
            length = int(c.height * rng.uniform(0.2, 0.9))
            y = int(rng.uniform(c.y0, c.y1 - length))
            cv2.line(mask, (x, y), (x, y + length), 255, t)
        g = int(rng.integers(0, 90))
        _blend(canvas, mask.astype(np.float32) / 255.0, 0, 0, (g, g, g))
    elif kind in ("shadow", "fold"):
        pad = int(h * 0.6)
        region = Box(row.x0 - pad, row.y0 - pad, row.x1 + pad, row.y1 + pad)
        yy, xx = np.mgrid[region.y0:region.y1, region.x0:region.x1].astype(np.float32)
        along = rng.random() < 0.4
        if along:  # an edge or crease along the row, inside it
            angle = np.deg2rad(rng.uniform(-2, 2) if kind == "fold" else rng.uniform(-5, 5))
            cx, cy = rng.uniform(row.x0, row.x1), row.y0 + h * rng.uniform(0.2, 0.8)
        else:  # across the row, through one of its writing cells
            c = cells[int(rng.integers(3))]
            angle = np.deg2rad(90 + (rng.uniform(-3, 3) if kind == "fold" else rng.uniform(-35, 35)))
            cx, cy = rng.uniform(c.x0 + 0.1 * c.width, c.x1 - 0.1 * c.width), (row.y0 + row.y1) / 2
        # signed distance to the line through (cx, cy) at `angle`
        dist = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        # fading out a row's height above and below the row, and at the grid's ends
        fade_y = np.clip(np.minimum(yy - region.y0, region.y1 - yy) / pad, 0, 1)
        fade_x = np.clip(np.minimum(xx - region.x0, region.x1 - xx) / pad, 0, 1)
        fade = fade_y * fade_x
        if kind == "shadow":
            soft = rng.uniform(1.0, 8.0) * k
            depth = rng.uniform(0.15, 0.45)
            side = 1 if rng.random() < 0.5 else -1
            darkness = depth / (1 + np.exp(-side * dist / soft))
        else:
            width = rng.uniform(0.6, 1.5) * k
            depth = rng.uniform(15, 60) / 250.0
            light = rng.uniform(5, 15) / 250.0
            side = 1 if rng.random() < 0.5 else -1
            darkness = depth * np.exp(-0.5 * (dist / width) ** 2) \
                - light * np.exp(-0.5 * ((dist - side * 2.5 * width) / (1.5 * width)) ** 2)
        _shade(canvas, region, (darkness * fade).astype(np.float32))
    elif kind == "pen_touch":
        mask = np.zeros(canvas.shape[:2], np.uint8)
        c = cells[int(rng.integers(3))]
        x, y = int(rng.uniform(c.x0 + 0.1 * c.width, c.x1 - 0.1 * c.width)), int(rng.uniform(c.y0 + 0.2 * h,
                                                                                            c.y1 - 0.2 * h))
        if rng.random() < 0.5:
            cv2.circle(mask, (x, y), max(1, int(round(rng.uniform(1.0, 3.0) * k))), 255, -1, cv2.LINE_AA)
        else:
            reach, a = rng.uniform(3, 12) * k, rng.uniform(0, 2 * np.pi)
            cv2.line(mask, (x, y), (int(x + reach * np.cos(a)), int(y + reach * np.sin(a))), 255,
                     max(1, int(round(dpi / 110))), cv2.LINE_AA)
        _blend(canvas, mask.astype(np.float32) / 255.0, 0, 0, INKS[int(rng.integers(len(INKS)))])
    else:
        raise ValueError(f"unknown artefact {kind!r} (known: {', '.join(ARTEFACTS)})")


# --- degrading -----------------------------------------------------------------------------

def _map_box(box: Box, to_image: PointMap) -> list[int]:
    """The image box around a page box: its corners and points along its edges (a bowed row's edge
    is a curve), mapped."""
    pts = to_image(box.outline())
    return [int(round(pts[:, 0].min())), int(round(pts[:, 1].min())),
            int(round(pts[:, 0].max())), int(round(pts[:, 1].max()))]


def _rotate(img: np.ndarray, angle: float, upside_down: bool, fill: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle + (180 if upside_down else 0), 1.0)
    out = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=(fill, fill, fill))
    return out, np.vstack([M, [0, 0, 1]])


def _noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape[:2])[..., None]
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _speckle(gray: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    n = int(gray.size * amount)
    ys, xs = rng.integers(0, gray.shape[0], n), rng.integers(0, gray.shape[1], n)
    gray[ys, xs] = rng.choice([0, 255], n, p=[0.3, 0.7]).astype(np.uint8)
    return gray


def _photo(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Put the page on a table, light it unevenly and photograph it in perspective."""
    h, w = img.shape[:2]
    # uneven light: a soft gradient and a darker corner
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    light = 1.0 - np.abs(gx) * 0.3 - np.abs(gy) * 0.3 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    light = np.clip(light, 0.6, 1.05) * rng.uniform(0.85, 1.0)
    page = np.clip(img.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)
    page_h_out = rng.uniform(1170, 1700)  # ~100-145 dpi across the page
    out_h = int(page_h_out / rng.uniform(0.80, 0.9))
    out_w = int(out_h * 0.75)
    scale = page_h_out / h
    pw, ph = w * scale, h * scale
    cx, cy = out_w / 2 + rng.normal(0, out_w * 0.02), out_h / 2 + rng.normal(0, out_h * 0.02)
    rect = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])
    a = np.deg2rad(rng.uniform(-6, 6))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    quad = rect @ rot.T
    # perspective: the far edge shrinks (a tilt of up to ~15 degrees), corners jitter
    tilt = rng.uniform(0, 0.12)
    quad[0:2, 0] *= 1 - tilt if rng.random() < 0.7 else 1
    quad += rng.normal(0, pw * 0.012, quad.shape)
    quad += [cx, cy]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    H = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    base = np.array(rng.choice([(120, 90, 60), (70, 70, 75), (150, 140, 125), (40, 45, 50)]), np.float32)
    background: np.ndarray = np.clip(base + rng.normal(0, 12, (out_h, out_w, 1)), 0, 255).astype(np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    warped = cv2.warpPerspective(page, H, (out_w, out_h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), H, (out_w, out_h))
    out = np.where(mask[..., None] > 127, warped, background)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.0))
    return _noise(out, rng, rng.uniform(2, 5)), H


# --- sheets ------------------------------------------------------------------------------------

@dataclass
class _People:
    rng: np.random.Generator
    codes: tuple[str, ...]
    seen: list[Person]
    repeat_share: float = 0.1

    name_crops: NameCrops | None = None

    def next(self) -> tuple[Person, bool]:
        if self.seen and self.rng.random() < self.repeat_share:
            return self.seen[int(self.rng.integers(len(self.seen)))], True
        names = _names()
        given = str(self.rng.choice(names["given_names"]))
        surname = str(self.rng.choice(names["surnames"]))
        crops: tuple[int, ...] = ()
        if self.name_crops is not None and self.rng.random() < REAL_NAME_SHARE:
            crops = tuple(int(i) for i in self.rng.choice(len(self.name_crops.labels), 2, replace=False))
            surname = self.name_crops.labels[crops[0]].upper()
            given = "-".join(w.capitalize() for w in self.name_crops.labels[crops[1]].split("-"))
        person = Person(f"p{len(self.seen) + 1:05d}", given, surname, str(self.rng.choice(self.codes)), crops)
        self.seen.append(person)
        return person, False


def _style(rng: np.random.Generator, template: Template) -> SheetStyle:
    widths = np.array([c.width for c in template.columns]) * rng.uniform(0.85, 1.15, len(template.columns))
    return SheetStyle(
        scale=float(rng.uniform(0.88, 1.0)),
        margin_left_mm=float(template.margin_mm + rng.uniform(-4, 4)),
        margin_top_mm=float(template.margin_mm + rng.uniform(-4, 6)),
        column_widths=tuple(float(w) for w in widths / widths.sum()),
        row_height_factor=float(rng.uniform(0.85, 1.1)),
        text_pt=float(rng.uniform(8.5, 10.0)),
        line_px=float(rng.uniform(0.2, 0.5)),
    )


def _written_name(person: Person, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.4:
        return f"{person.surname.upper()} {person.given}"
    if r < 0.7:
        return f"{person.surname} {person.given}".upper()
    if r < 0.9:
        return f"{person.surname} {person.given}"
    return f"{person.given} {person.surname}"


def _written_code(code: str, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.08:
        return f"{code[:2]} {code[2:]}"
    if r < 0.11 and code.startswith("0"):
        return code[1:]  # the leading zero dropped
    return code


def fill_page(template: Template, page: int, dpi: float, style: SheetStyle, rng: np.random.Generator,
              people: _People, fill_to: float,
              conditions: Conditions | None = None) -> tuple[np.ndarray, PageLayout, list[dict[str, Any]]]:
    """Render a page of the sheet and write on it. Returns RGB pixels, layout, truth rows.

    `conditions.artefacts` rows are left blank and get their artefacts (truth: `artefacts`, the kinds);
    `conditions.pens` rows are written, with that pen (truth: `pen`)."""
    artefacts: dict[int, list[str]] = {}
    for number, kind in conditions.artefacts if conditions else ():
        artefacts.setdefault(number, []).append(kind)
    pens = dict(conditions.pens) if conditions else {}
    blank, layout = render_page(template, page, dpi, style)
    canvas = np.repeat(np.asarray(blank)[..., None], 3, axis=2).copy()
    keys = template.column_keys
    rows_truth = []
    all_rows = [(n, cells) for block in layout.blocks for n, cells in zip(block.rows, block.cells)]
    last_written = int(round(len(all_rows) * fill_to))
    fonts = handwriting_fonts()
    thickness = max(2, int(round(dpi / 110)))
    for i, (number, cells) in enumerate(all_rows):
        boxes = dict(zip(keys, cells))
        truth: dict[str, Any] = {"row_number": number, "written": False, "name": "", "name_written": "",
                                 "postal_code": "", "postal_written": "", "signature": "empty", "person_id": "",
                                 "repeat": False}
        pen = pens.get(number)
        if number in artefacts:
            truth["artefacts"] = artefacts[number]
        elif pen is not None or (i < last_written and rng.random() > 0.04):
            person, repeat = people.next()
            ink = INKS[int(rng.integers(len(INKS)))]
            if pen == "faint":
                ink = faint_ink(rng)
            if person.crops and people.name_crops is not None and pen is None:
                name_text = " ".join(people.name_crops.labels[i] for i in person.crops)
                write_crops(canvas, boxes["name"], [people.name_crops.images[i] for i in person.crops], rng, ink)
            else:
                name_text = _written_name(person, rng)
                candidates = [f for f in fonts if _covers(f, name_text)]
                write_text(canvas, boxes["name"], name_text, rng, ink, str(rng.choice(candidates)), pen)
            code_text = _written_code(person.postal_code, rng)
            write_digits(canvas, boxes["postal_code"], code_text, rng, ink, pen)
            r = rng.random()
            state = "signed" if r < 0.92 else ("struck" if r < 0.97 else "empty")
            if state != "empty":
                write_signature(canvas, boxes["signature"], rng, ink, thickness, pen)
            if state == "struck":
                strike_row(canvas, boxes, rng, ink, thickness, pen)
            truth.update(written=True, name=person.canonical, name_written=name_text,
                         name_source="real" if person.crops and pen is None else "font",
                         postal_code=person.postal_code, postal_written=code_text, signature=state,
                         person_id=person.person_id, repeat=repeat)
            if pen is not None:
                truth["pen"] = pen
        truth["cells"] = {k: [b.x0, b.y0, b.x1, b.y1] for k, b in boxes.items()}
        rows_truth.append(truth)
    # over everything written: a shadow or a fold darkens the neighbours' ink too
    for truth in rows_truth:
        for j, kind in enumerate(truth.get("artefacts", ())):
            boxes = {k: Box(*b) for k, b in truth["cells"].items()}
            put_artefact(canvas, boxes, kind, np.random.default_rng(
                (conditions.marks_seed if conditions else 0, page, truth["row_number"], j)), dpi)
    return canvas, layout, rows_truth


@dataclass(frozen=True)
class Conditions:
    """Conditions forced on a page for a targeted test; None means drawn at random."""

    dpi: int | None = None
    angle: float | None = None  # degrees, counter-clockwise
    upside_down: bool | None = None
    scale: float | None = None  # the sheet printed at this share of its size
    blurred_numbers: tuple[int, ...] = ()  # printed row numbers smudged in print
    broken_lines: bool = False  # ruled lines with gaps, as a worn printer leaves them
    # (printed row number, one of ARTEFACTS): that row is left blank and gets that mark (several per row
    # allowed); (row number, one of PENS): that row is written with that pen. Their places are drawn from
    # marks_seed, apart from the page's own draws.
    artefacts: tuple[tuple[int, str], ...] = ()
    pens: tuple[tuple[int, str], ...] = ()
    marks_seed: int = 0
    photo_factors: tuple[str, ...] | None = None  # hardphoto: the factors applied (None: all of photos.FACTORS)


def _homography_map(H: np.ndarray) -> PointMap:
    def to_image(pts: np.ndarray) -> np.ndarray:
        mapped: np.ndarray = cv2.perspectiveTransform(np.asarray(pts, np.float64)[None], H)[0]
        return mapped

    return to_image


def degrade(canvas: np.ndarray, mode: str, rng: np.random.Generator,
            conditions: Conditions = Conditions()) -> tuple[Image.Image, PointMap, dict[str, Any]]:
    """Scan or photograph a page. Returns the image, the map of page points to image points, and facts."""
    facts: dict[str, Any] = {"rotation_deg": 0.0, "upside_down": False}
    if mode == "photo":
        out, H = _photo(canvas, rng)
        return Image.fromarray(out), _homography_map(H), facts
    if mode == "hardphoto":
        factors = FACTORS if conditions.photo_factors is None else conditions.photo_factors
        out, to_image, photo_facts = hard_photo(canvas, rng, factors)
        facts.update(photo_factors=list(factors), **photo_facts)
        return Image.fromarray(out), to_image, facts
    limit = {"scan": 5.0, "gray": 3.0, "bilevel": 2.0}[mode]
    angle = float(rng.uniform(-limit, limit)) if rng.random() < 0.8 else 0.0
    upside_down = bool(rng.random() < 0.12)
    if conditions.angle is not None:
        angle = conditions.angle
    if conditions.upside_down is not None:
        upside_down = conditions.upside_down
    facts.update(rotation_deg=round(angle, 3), upside_down=upside_down)
    tint = rng.uniform(235, 255)
    paper = np.clip(canvas.astype(np.float32) * (tint / 255.0), 0, 255).astype(np.uint8)
    out, H = _rotate(paper, angle, upside_down, int(tint))
    if mode == "scan":
        out = _noise(out, rng, rng.uniform(1.5, 5))
        return Image.fromarray(out), _homography_map(H), facts
    gray = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    gray = _noise(gray[..., None], rng, rng.uniform(2, 8))[..., 0]
    if rng.random() < 0.5:
        gray = cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.4, 0.9))
    if mode == "gray":
        return Image.fromarray(gray), _homography_map(H), facts
    bw = np.where(gray > rng.uniform(140, 185), 255, 0).astype(np.uint8)
    bw = _speckle(bw, rng, rng.uniform(0.0, 0.0008))
    return Image.fromarray(bw).convert("1", dither=Image.Dither.NONE), _homography_map(H), facts


def _dpi_for(mode: str, rng: np.random.Generator) -> int:
    if mode in PHOTO_MODES:
        return 200  # rendered at 200 dpi, then photographed down to ~100-145 dpi across the page
    return int(rng.choice([150, 200, 240, 300], p=[0.15, 0.3, 0.2, 0.35]))


def _save(images: list[Image.Image], path: Path, fmt: str, dpi: float) -> None:
    if fmt == "pdf":
        pages = [im if im.mode in ("1", "L", "RGB") else im.convert("RGB") for im in images]
        pages[0].save(path, "PDF", resolution=dpi, save_all=True, append_images=pages[1:])
    elif fmt == "tiff":
        compression = "group4" if all(im.mode == "1" for im in images) else "tiff_lzw"
        images[0].save(path, "TIFF", compression=compression, save_all=True, append_images=images[1:],
                       dpi=(dpi, dpi))
    elif fmt == "jpg":
        img = images[0].convert("L") if images[0].mode == "1" else images[0]
        img.save(path, "JPEG", quality=85, dpi=(int(dpi), int(dpi)))
    else:
        images[0].save(path, "PNG", dpi=(int(dpi), int(dpi)))


def make_page(template: Template, page: int, mode: str, rng: np.random.Generator, people: _People,
              style: SheetStyle, dpi: int, fill_to: float = 1.0,
              conditions: Conditions = Conditions()) -> tuple[Image.Image, dict[str, Any]]:
    """One filled, scanned or photographed page, and its truth (cell boxes in the image's pixels)."""
    if conditions.scale is not None:
        style = replace(style, scale=conditions.scale)
    dpi = conditions.dpi or dpi
    canvas, _, rows = fill_page(template, page, dpi, style, rng, people, fill_to, conditions)
    for row in rows:
        if row["row_number"] in conditions.blurred_numbers:
            x0, y0, x1, y1 = row["cells"]["row_number"]
            canvas[y0:y1, x0:x1] = cv2.GaussianBlur(canvas[y0:y1, x0:x1], (0, 0), dpi / 110)
    if conditions.broken_lines:
        _break_lines(canvas, rows, rng)
    image, to_image, facts = degrade(canvas, mode, rng, conditions)
    for row in rows:
        row["cells"] = {k: _map_box(Box(*b), to_image) for k, b in row["cells"].items()}
    return image, {"sheet_page": page, "dpi": dpi, "pixel_size": list(image.size), **facts, "rows": rows}


def _break_lines(canvas: np.ndarray, rows: list[dict[str, Any]], rng: np.random.Generator) -> None:
    """White gaps across the ruled lines around every row."""
    for row in rows:
        x0, y0 = row["cells"]["row_number"][:2]
        x1, y1 = row["cells"]["signature"][2:]
        h, w = y1 - y0, x1 - x0
        for _ in range(6):  # gaps in the line above the row
            gx = int(rng.uniform(x0, x1))
            canvas[y0 - 6:y0 + 2, gx:gx + int(w * rng.uniform(0.01, 0.03))] = 255
        for cell in row["cells"].values():  # and in the column lines beside it
            gy = int(rng.uniform(y0, y1 - h * 0.3))
            canvas[gy:gy + int(h * 0.3), cell[0] - 5:cell[0] + 2] = 255


def people_from(postal_codes: tuple[str, ...], rng: np.random.Generator) -> _People:
    return _People(rng, postal_codes, [])


def generate(out: Path, template: Template, sheets: int, seed: int, modes: tuple[str, ...] = MODES,
             formats: tuple[str, ...] = FORMATS, postal_codes: tuple[str, ...] | None = None,
             progress: Any = None, dpi: int | None = None, name_crops: NameCrops | None = None,
             photo_factors: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Write `sheets` filled sheets into `out` and `out/truth.json`; return the truth.

    dpi fixes the scan resolution of every sheet but photos (default: 150 to 300 dpi, varied).
    name_crops: REAL_NAME_SHARE of the signers write their name with two of these real crops (truth
    rows say `name_source` real or font); without, every name is written with a handwriting font.
    photo_factors: the hardphoto sheets' factors (photos.FACTORS; default all of them).
    """
    conditions = Conditions(photo_factors=photo_factors)
    if postal_codes is None:
        from scan_pipeline.core.postcodes import load_postal_list
        postal_codes = tuple(load_postal_list().codes)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}",
                          hint="choose a folder you can write to") from exc
    rng = np.random.default_rng(seed)
    people = _People(rng, postal_codes, [], name_crops=name_crops)
    truth: dict[str, Any] = {"generator": {"version": GENERATOR_VERSION, "seed": seed, "sheets": sheets,
                                           "modes": list(modes), "formats": list(formats),
                                           "template": template.id}, "files": []}
    if photo_factors is not None:
        truth["generator"]["photo_factors"] = list(photo_factors)
    if name_crops is not None:
        truth["generator"]["name_crops"] = {"count": len(name_crops.labels), "csv_sha256": name_crops.source_sha256,
                                            "share": REAL_NAME_SHARE}
    for s in range(sheets):
        mode = modes[s % len(modes)]
        fmt = formats[(s % len(modes) + s // len(modes)) % len(formats)]  # every mode meets every format
        style = _style(rng, template)
        sheet_dpi = _dpi_for(mode, rng)
        if dpi and mode not in PHOTO_MODES:
            sheet_dpi = dpi
        fill_to = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0))
        pages = [make_page(template, p.page, mode, rng, people, style, sheet_dpi,
                           fill_to if p.page == len(template.pages) else 1.0, conditions) for p in template.pages]
        if rng.random() < 0.3:
            pages.reverse()  # pages come in any order: the pipeline tells them by their row numbers
        token = rng.integers(0, 16 ** 6, len(pages))
        if fmt in ("pdf", "tiff"):
            groups = [(f"sheet-{s + 1:03d}-{token[0]:06x}.{'tif' if fmt == 'tiff' else fmt}", pages)]
        else:
            groups = [(f"sheet-{s + 1:03d}-{t:06x}.{fmt}", [pg]) for t, pg in zip(token, pages)]
        for name, group in groups:
            path = out / name
            image_dpi = group[0][0].width / (template.paper_mm[0] / 25.4) if mode in PHOTO_MODES else sheet_dpi
            try:
                _save([im for im, _ in group], path, fmt, image_dpi)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
            truth["files"].append({"file": name, "sheet": s + 1, "mode": mode, "format": fmt,
                                   "pages": [{"page": i + 1, **info} for i, (_, info) in enumerate(group)]})
        if progress:
            progress(s + 1)
    write_truth(out / "truth.json", truth)
    return truth


def write_truth(path: Path, truth: dict[str, Any]) -> None:
    buf = io.StringIO()
    json.dump(truth, buf, ensure_ascii=False, indent=1)
    path.write_text(buf.getvalue() + "\n", encoding="utf-8")
