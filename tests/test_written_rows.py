"""Written rows (../shared/DESIGN.md): any writing, hairline and faint pens included, puts a row in the
ledger; specks, ruled-line fragments, shadows, folds and a stray pen touch never do.

Rows are drawn on a generated sheet page (200 dpi, scanned in gray, not turned) with the generator's
own pens and artefacts (`synth.put_artefact`, `synth.pen_strokes`), then cut and read by the
pipeline's own functions (`grid.page_masks`, `cells.cut_row`, `pipeline.read_row`, real Tesseract).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from scan_pipeline.core.config import load_config
from scan_pipeline.core.records import GridRow
from scan_pipeline.page.cells import cut_row, holds_writing
from scan_pipeline.page.grid import page_masks
from scan_pipeline.synth import samples as synth
from scan_pipeline.synth.sheet import SheetStyle, render_page

DPI = 200
INK = (20, 20, 28)
PAGE = 2  # 24 rows


@pytest.fixture(scope="module")
def ctx(template):
    from scan_pipeline.run.process import WorkerContext

    return WorkerContext.build(template)


def _page(template, draw, seed: int = 0, mode: str = "gray"):
    """A blank sheet page; `draw(canvas, rows, rng)` writes on it (rows: cell boxes by row number).
    Returns the scanned gray page and its GridRows (the pipeline's cells: the layout's boxes)."""
    blank, layout = render_page(template, PAGE, DPI, SheetStyle())
    canvas = np.repeat(np.asarray(blank)[..., None], 3, axis=2).copy()
    keys = template.column_keys
    rows = {n: dict(zip(keys, cells)) for block in layout.blocks for n, cells in zip(block.rows, block.cells)}
    rng = np.random.default_rng(seed)
    draw(canvas, rows, rng)
    image, _, _ = synth.degrade(canvas, mode, rng, synth.Conditions(angle=0.0, upside_down=False))
    gray = np.asarray(image.convert("L"))
    grid = {n: GridRow(n, str(n), 1.0, tuple(b.items())) for n, b in rows.items()}
    return gray, grid


def _cut(gray, grid):
    masks = page_masks(gray)
    config = load_config().cells
    return {n: cut_row(gray, masks, row, config) for n, row in grid.items()}


def _read(ctx, grid, cut, number):
    from scan_pipeline.run.process import read_row

    return read_row(grid[number], cut[number], ctx, np.eye(3))


# --- artefacts on blank rows ---------------------------------------------------------------------

ARTEFACT_ROWS = {kind: 12 + 2 * i for i, kind in enumerate(synth.ARTEFACTS)}  # 12, 14, ... 20


def _artefacts(seed: int):
    def draw(canvas, rows, rng):
        for kind, number in ARTEFACT_ROWS.items():
            synth.put_artefact(canvas, rows[number], kind, np.random.default_rng((seed, number)), DPI)
    return draw


@pytest.fixture(scope="module", params=[0, 1, 2])
def artefact_page(request, template):
    gray, grid = _page(template, _artefacts(request.param), seed=request.param)
    return grid, _cut(gray, grid)


@pytest.mark.parametrize("kind", synth.ARTEFACTS)
def test_artefacts_are_not_writing(artefact_page, kind):
    grid, cut = artefact_page
    cells = cut[ARTEFACT_ROWS[kind]]
    for column in ("name", "postal_code", "signature"):
        found = holds_writing(cells, column, load_config().cells)
        assert not found.written, (kind, column, found.marks)


def test_blank_rows_with_artefacts_stay_out_of_the_ledger(artefact_page, ctx):
    grid, cut = artefact_page
    written = [kind for kind, n in ARTEFACT_ROWS.items() if not _read(ctx, grid, cut, n).is_blank]
    assert written == []


def test_strong_artefacts_stay_out_of_the_ledger(template, ctx):
    """The marks that wrote blank rows before: a doubled piece of ruled line, a printer's dashes near
    a line, toner dots, a dark shadow's edge, a fold's crease, on a scan with the row next to them."""
    def draw(canvas, rows, rng):
        t = 2  # a printed line, px
        name, code, sig = rows[13]["name"], rows[13]["postal_code"], rows[13]["signature"]
        canvas[code.y1 - 6 - t:code.y1 - 6, code.x0 + 20:code.x0 + 120] = 30  # doubled bottom line
        for x in range(sig.x0 + 30, sig.x0 + 200, 24):  # dashes under the top line
            canvas[sig.y0 + 4:sig.y0 + 4 + t, x:x + 10] = 40
        for x, y in ((name.x0 + 80, name.y0 + 30), (name.x0 + 300, name.y0 + 20), (code.x0 + 50, code.y0 + 40)):
            canvas[y:y + 4, x:x + 4] = 30  # toner dots, 4 px
        row = rows[15]  # a shadow's edge along the row, 35 % darker below it
        y = row["name"].y0 + row["name"].height // 2
        canvas[y:row["name"].y1 + 20, row["row_number"].x0:row["signature"].x1] = \
            (canvas[y:row["name"].y1 + 20, row["row_number"].x0:row["signature"].x1] * 0.65).astype(np.uint8)
        row = rows[17]  # a crease across the postal code cell, 40 levels darker, 2 px wide
        x = row["postal_code"].x0 + row["postal_code"].width // 2
        part = canvas[row["name"].y0 - 20:row["name"].y1 + 20, x:x + 2]
        part[:] = np.clip(part.astype(np.int16) - 40, 0, 255).astype(np.uint8)
    gray, grid = _page(template, draw, seed=5)
    cut = _cut(gray, grid)
    written = [n for n in (13, 15, 17) if not _read(ctx, grid, cut, n).is_blank]
    assert written == []


# --- light pens, small writing -------------------------------------------------------------------

def _write(number: int, what: str, pen: str | None, text: str = "DUPONT Marie"):
    def draw(canvas, rows, rng):
        boxes = rows[number]
        ink = synth.faint_ink(rng) if pen == "faint" else INK
        if what == "name":
            synth.write_text(canvas, boxes["name"], text, rng, ink, synth.handwriting_fonts()[0], pen)
        elif what == "code":
            synth.write_digits(canvas, boxes["postal_code"], text, rng, ink, pen)
        elif what == "signature":
            synth.write_signature(canvas, boxes["signature"], rng, ink, 2, pen)
        elif what == "ditto":  # two short strokes in the name cell, mid-height
            b = boxes["name"]
            x, y = b.x0 + b.width // 3, b.y0 + b.height // 3
            mask = np.zeros(canvas.shape[:2], np.float32)
            for dx in (0, 14):
                mask[y:y + 14, x + dx:x + dx + 3] = 1.0
            synth._blend(canvas, synth.pen_strokes(mask, pen, rng), 0, 0, ink)
        elif what == "strike":
            synth.strike_row(canvas, boxes, rng, ink, 2, pen)
    return draw


@pytest.mark.parametrize("what, pen, text", [
    ("name", "hairline", "DUPONT Marie"),
    ("name", "faint", "DUPONT Marie"),
    ("name", None, "LY"),
    ("code", "hairline", "7"),
    ("code", "faint", "75011"),
    ("code", None, "1"),
    ("signature", "hairline", ""),
    ("signature", "faint", ""),
    ("ditto", None, ""),
    ("ditto", "faint", ""),
])
def test_writing_is_writing(template, what, pen, text):
    gray, grid = _page(template, _write(14, what, pen, text), seed=3)
    cut = _cut(gray, grid)
    column = {"name": "name", "ditto": "name", "code": "postal_code", "signature": "signature"}[what]
    found = holds_writing(cut[14], column, load_config().cells)
    assert found.written, found.marks
    others = [c for c in ("name", "postal_code", "signature") if c != column]
    assert not any(holds_writing(cut[14], c, load_config().cells).written for c in others)


@pytest.mark.parametrize("what, pen", [("name", "faint"), ("code", "hairline"), ("signature", "faint"),
                                       ("strike", None), ("strike", "hairline")])
def test_light_writing_alone_keeps_the_row(template, ctx, what, pen):
    """A row with only a faint name, a hairline postal code, a faint signature or a strike-through is
    a written row, and what is written is read."""
    gray, grid = _page(template, _write(14, what, pen, "DUPONT Marie" if what == "name" else "75011"), seed=4)
    cut = _cut(gray, grid)
    reading = _read(ctx, grid, cut, 14)
    assert not reading.is_blank
    if what == "name":
        assert len(reading.name.raw.replace(" ", "")) >= 6  # the name is read, not just seen
    if what == "signature":
        assert reading.signature == "signed"
    if what == "strike":
        assert reading.signature == "struck"


def test_a_lone_digit_keeps_the_row(template, ctx):
    gray, grid = _page(template, _write(14, "code", "hairline", "7"), seed=4)
    cut = _cut(gray, grid)
    assert holds_writing(cut[14], "postal_code", load_config().cells).written
    assert not _read(ctx, grid, cut, 14).is_blank


# --- end to end ----------------------------------------------------------------------------------

def test_page_with_artefacts_and_light_pens(tmp_path, template, ctx):
    """A generated page through the page function: artefact rows are not signatures, light-pen rows
    all are."""
    from scan_pipeline.core.postcodes import load_postal_list
    from scan_pipeline.page.load import InputFile, iter_pages
    from scan_pipeline.run.process import process_page

    numbers = list(template.rows_on_page(PAGE))
    arts = tuple((n, synth.ARTEFACTS[i % len(synth.ARTEFACTS)]) for i, n in enumerate(numbers[8::2]))
    pens = tuple((n, synth.PENS[i % len(synth.PENS)]) for i, n in enumerate(numbers[9::2]))
    rng = np.random.default_rng(41)
    people = synth.people_from(tuple(load_postal_list().codes)[:500], rng)
    image, info = synth.make_page(template, PAGE, "scan", rng, people, synth._style(rng, template), 200, 1 / 3,
                                  synth.Conditions(artefacts=arts, pens=pens, marks_seed=41))
    truth = {r["row_number"]: r for r in info["rows"]}
    schema = json.loads(resources.files("scan_pipeline").joinpath("schemas/truth.schema.json").read_text("utf-8"))
    row_schema = {**schema["$defs"]["row"], "$defs": schema["$defs"]}
    assert [e.message for r in info["rows"] for e in Draft202012Validator(row_schema).iter_errors(r)] == []
    assert all(truth[n]["artefacts"] == [k] and not truth[n]["written"] for n, k in arts)
    assert all(truth[n]["pen"] == p and truth[n]["written"] for n, p in pens)
    path = tmp_path / "page.png"
    image.save(path)
    result = process_page(next(iter_pages(InputFile(path, str(path)))), ctx)
    rows = {r.row_number: r for r in result.rows}
    assert [n for n, _ in arts if not rows[n].is_blank] == []
    assert [n for n, _ in pens if rows[n].is_blank] == []
