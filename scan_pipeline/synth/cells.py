"""Postal code cells written as the sample generator writes them, then degraded: the digit bench's
cells (scripts/bench_postal.py), the digit model's calibration (training/train_digits.py) and tests.

Cells are blank canvases of the sizes a postal code cell has on the sheets (cell heights 40-110 px,
with the margin `cells.cut_row` keeps) written with `samples.write_digits`, i.e. with the MNIST
*generator* digits that no model trains on, then degraded (noise, blur, bilevel, JPEG, low
resolution, a strike-through line, thin gaps where a ruled line was whitened).
"""

from __future__ import annotations

import cv2
import numpy as np

from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.core.records import Box
from scan_pipeline.synth import samples as synth

VARIANTS = ("clean", "noisy", "blur", "bilevel", "jpeg", "lowres", "struck", "gaps")


def written_code(code: str, rng: np.random.Generator) -> str:
    """As synth._written_code, with a higher share of spaces and dropped zeros."""
    r = rng.random()
    if r < 0.12:
        return f"{code[:2]} {code[2:]}"
    if r < 0.30 and code.startswith("0"):
        return code[1:]
    return code


def make_cell(written: str, rng: np.random.Generator, variant: str) -> np.ndarray:
    """A gray postal cell crop as `cells.cut_row` gives it, with `written` in it."""
    return traced_cell(written, rng, variant)[0]


def traced_cell(written: str, rng: np.random.Generator, variant: str) -> tuple[np.ndarray, list[int]]:
    """make_cell, and the index of each digit image written in it (in `synth._digits()`)."""
    cell_h = int(rng.integers(40, 111))
    cell_w = int(cell_h * rng.uniform(2.6, 4.6))
    margin = int(cell_h * 0.12)
    canvas = np.full((cell_h + 2 * margin, cell_w + 2 * margin, 3), 255, np.uint8)
    box = Box(margin, margin, margin + cell_w, margin + cell_h)
    ink = synth.INKS[int(rng.integers(len(synth.INKS)))]
    used = synth.write_digits(canvas, box, written, rng, ink)
    gray: np.ndarray = cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray = gray * rng.uniform(0.92, 1.0)  # paper tint
    if variant == "struck":
        t = max(2, cell_h // 35)
        y0 = margin + int(cell_h * rng.uniform(0.35, 0.65))
        y1 = y0 + int(rng.normal(0, cell_h * 0.08))
        mask = np.zeros(gray.shape, np.uint8)
        cv2.line(mask, (0, y0), (gray.shape[1] - 1, y1), 255, t, cv2.LINE_AA)
        gray = np.minimum(gray, 255 - mask.astype(np.float32) * 0.8)
    if variant == "gaps":  # a ruled line whitened across a digit, as the line remover does
        for _ in range(int(rng.integers(1, 4))):
            x = int(rng.integers(box.x0, box.x1))
            gray[:, x:x + int(rng.integers(1, 4))] = 250
        if rng.random() < 0.5:
            y = int(rng.integers(box.y0, box.y1))
            gray[y:y + int(rng.integers(1, 3)), :] = 250
    gray = gray + rng.normal(0, {"noisy": 12.0}.get(variant, rng.uniform(1.5, 5)), gray.shape)
    if variant == "blur":
        gray = cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.6, 1.3))
    if variant == "lowres":  # a photo: fewer pixels per digit, then enlarged back to the crop's size
        f = rng.uniform(0.45, 0.7)
        small = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        gray = cv2.resize(small, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    if variant == "bilevel":
        gray = np.where(gray > rng.uniform(140, 185), 255, 0).astype(np.uint8)
    if variant == "jpeg":
        ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 80))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if decoded is None:  # never for a buffer imencode just wrote
            raise RuntimeError("a cell's JPEG round trip failed")
        gray = decoded
    return gray, used


def generated_cases(n: int, seed: int) -> list[tuple[str, str, str, np.ndarray]]:
    """(variant, code, written, crop) for n cells."""
    return generated_cases_traced(n, seed)[0]


def generated_cases_traced(n: int, seed: int) -> tuple[list[tuple[str, str, str, np.ndarray]], list[list[int]]]:
    """generated_cases, and the digit images written in each cell (indices in `synth._digits()`)."""
    rng = np.random.default_rng(seed)
    codes = load_postal_list().codes
    out, images = [], []
    for k in range(n):
        variant = VARIANTS[k % len(VARIANTS)]
        code = codes[int(rng.integers(len(codes)))]
        written = written_code(code, rng)
        crop, used = traced_cell(written, rng, variant)
        out.append((variant, code, written, crop))
        images.append(used)
    return out, images


def misread_images(code: str, written: str, read: str, used: list[int]) -> list[int]:
    """The digit images of a cell read as another code, by position: `written` is `code` as the writer
    wrote it (a space, a dropped leading zero), `used` the image of each of its digits."""
    digits = written.replace(" ", "")
    if len(read) != 5 or len(digits) != len(used):
        return []
    off = len(code) - len(digits)
    return [img for j, (ch, img) in enumerate(zip(digits, used)) if read[j + off] != ch]
