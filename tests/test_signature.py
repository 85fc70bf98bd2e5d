"""Signature state of a row, from rows drawn the way the sample generator writes them."""

from __future__ import annotations

import numpy as np
import pytest

from scan_pipeline.core.config import load_config
from scan_pipeline.core.records import Box
from scan_pipeline.read.signature import signature_state
from scan_pipeline.synth.samples import handwriting_fonts, strike_row, write_signature, write_text

INK = (20, 20, 28)
# a row at 200 dpi: name, postal code and signature cells, with a margin above and below
BOXES = {"name": Box(40, 30, 700, 90), "postal_code": Box(700, 30, 960, 90), "signature": Box(960, 30, 1360, 90)}


def _canvas() -> np.ndarray:
    return np.full((120, 1400, 3), 255, np.uint8)


def _state(canvas: np.ndarray) -> str:
    """What pipeline.read_row hands to signature_state: the signature cell's ink share and the row's ink."""
    gray = canvas.mean(axis=2)
    ink = np.where(gray < 128, 255, 0).astype(np.uint8)
    sig = BOXES["signature"]
    share = float((ink[sig.y0:sig.y1, sig.x0:sig.x1] > 0).mean())
    name = BOXES["name"]
    return signature_state(share, ink[name.y0:name.y1, name.x0:sig.x1], load_config().signature)


def _name(canvas: np.ndarray, rng: np.random.Generator, text: str = "DUPONT Marie") -> None:
    write_text(canvas, BOXES["name"], text, rng, INK, handwriting_fonts()[0])


@pytest.mark.parametrize("seed", range(4))
def test_signed(seed):
    rng = np.random.default_rng(seed)
    canvas = _canvas()
    _name(canvas, rng)
    write_signature(canvas, BOXES["signature"], rng, INK, 2)
    assert _state(canvas) == "signed"


def test_empty_row_and_name_without_signature():
    canvas = _canvas()
    assert _state(canvas) == "empty"
    _name(canvas, np.random.default_rng(1))
    assert _state(canvas) == "empty"  # handwriting of the name alone is neither signed nor struck


@pytest.mark.parametrize("text", ["DUPONT Marie", "LE GOFF Jean-Baptiste", "MMMMMMMMMMMM", "--- ----- ---"])
def test_name_alone_is_not_struck(text):
    canvas = _canvas()
    _name(canvas, np.random.default_rng(2), text)
    write_signature(canvas, BOXES["signature"], np.random.default_rng(3), INK, 2)
    assert _state(canvas) == "signed"


def _struck(seed: int, cross: bool) -> np.ndarray:
    """A struck row: the generator draws a line (70%) or a cross (30%); draw until we get the one we want."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        canvas = _canvas()
        _name(canvas, rng)
        write_signature(canvas, BOXES["signature"], rng, INK, 2)
        probe = np.random.default_rng(s + 10_000)
        is_cross = probe.random() >= 0.7
        if is_cross == cross:
            strike_row(canvas, BOXES, np.random.default_rng(s + 10_000), INK, 2)
            return canvas
    raise AssertionError("no such strike drawn")


@pytest.mark.parametrize("seed", range(3))
def test_struck_with_a_line(seed):
    assert _state(_struck(seed * 7, cross=False)) == "struck"


@pytest.mark.parametrize("seed", range(3))
def test_struck_with_a_cross(seed):
    assert _state(_struck(seed * 7, cross=True)) == "struck"


def test_struck_row_without_signature():
    canvas = _canvas()
    _name(canvas, np.random.default_rng(4))
    strike_row(canvas, BOXES, np.random.default_rng(5), INK, 2)
    assert _state(canvas) == "struck"


def test_signature_spilling_over_the_cell_line_is_signed():
    canvas = _canvas()
    _name(canvas, np.random.default_rng(6))
    sig = BOXES["signature"]
    # a wide flourish starting in the postal code cell and crossing the cell's top and bottom lines
    t = np.linspace(0, 1, 400)
    xs = (sig.x0 - 60 + t * (sig.width + 40)).astype(int)
    ys = (60 + 40 * np.sin(t * 18)).astype(int)
    for x, y in zip(xs, ys):
        canvas[max(0, y - 1):y + 2, x - 1:x + 2] = 20
    assert _state(canvas) == "signed"


def test_row_ink_from_cut_cells_keeps_the_strike():
    from scan_pipeline.core.records import RowCells
    from scan_pipeline.page.cells import row_ink

    canvas = _struck(0, cross=False)
    gray = canvas.mean(axis=2).astype(np.uint8)
    crops = tuple((k, gray[b.y0 - 6:b.y1 + 6, b.x0:b.x1]) for k, b in BOXES.items())
    cells = RowCells(1, tuple(BOXES.items()), crops, tuple((k, 0.0) for k in BOXES))
    sig = BOXES["signature"]
    share = float((gray[sig.y0:sig.y1, sig.x0:sig.x1] < 128).mean())
    assert signature_state(share, row_ink(cells), load_config().signature) == "struck"
