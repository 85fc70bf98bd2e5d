"""Phone photos taken in a hurry (#23): the generator's hardphoto mode, and the pipeline under each
of its factors alone and all together. Generated sheets only (invented people); real Tesseract.

The generator's truth must follow the paper: a bowed or folded page's pixels move exactly as the
truth's cell boxes say. Then each factor alone: every written row found under its printed number,
its cells where the truth has them. What the pipeline does not yet survive is marked xfail
(strict: the day it passes, the mark must go) and measured by scripts/bench_photos.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scan_pipeline.run.process import WorkerContext, process_page
from scan_pipeline.synth.photos import FACTORS, _Paper, hard_photo

from .test_geometry import _assert_every_row_found, _page_under


@pytest.fixture(scope="module")
def context(template):
    return WorkerContext.build(template)


def _dark_rows(img: np.ndarray, x: int) -> float:
    column = img[:, x, 0].astype(float)
    ys = np.flatnonzero(column < 128)
    return float(ys.mean())


def test_a_bowed_page_moves_its_lines_as_its_truth_says():
    h, w = 400, 300
    page = np.full((h, w, 3), 255, np.uint8)
    page[199:202, :] = 0  # a ruled line at y = 200
    paper = _Paper(h, w, bow=12.0)
    bent = paper.apply(page, (255, 255, 255))
    for x in (5, 75, 150, 225, 294):
        expected = paper.forward(np.array([[x, 200.0]]))[0, 1]
        assert abs(_dark_rows(bent, x) - expected) < 1.0, x
    assert abs(_dark_rows(bent, 150) - _dark_rows(bent, 5)) > 10  # the middle moved, the edge did not


def test_a_folded_page_moves_its_lower_half_as_its_truth_says():
    h, w = 400, 300
    page = np.full((h, w, 3), 255, np.uint8)
    page[:, 149:152] = 0  # a vertical ruled line at x = 150
    paper = _Paper(h, w, crease_y=200.0, fold_shift=6.0)
    folded = paper.apply(page, (255, 255, 255))
    for y, shift in ((50, 0.0), (350, 6.0)):
        xs = np.flatnonzero(folded[y, :, 0] < 128)
        assert abs(xs.mean() - (150 + shift)) < 1.0
        assert abs(paper.forward(np.array([[150.0, y]]))[0, 0] - (150 + shift)) < 0.01
    crease = folded[195:206, 20, 0].astype(float)
    assert crease.min() < 235  # the crease catches less light


def test_hard_photo_rejects_an_unknown_factor():
    with pytest.raises(ValueError, match="unknown photo factors"):
        hard_photo(np.full((50, 40, 3), 255, np.uint8), np.random.default_rng(0), ("tilt",))


def test_the_factors_are_what_the_truth_says(template):
    _, info = _page_under(template, "hardphoto", 31, photo_factors=("perspective", "lowres"))
    assert info["photo_factors"] == ["perspective", "lowres"]
    assert info["bow_px"] == 0 and info["crease_y"] < 0
    assert 0.03 < info["corner_shift"] <= 0.11 and 90 <= info["dpi"] <= 110
    _, all_info = _page_under(template, "hardphoto", 31)
    assert all_info["photo_factors"] == list(FACTORS) and all_info["bow_px"] != 0 and all_info["crease_y"] > 0


NOT_FOUND_YET = {"all": "all factors at once: page 2 (seed 42) gives a block with 1 column of 4"}
BLANKS_WRITTEN_YET = NOT_FOUND_YET
_READ: dict[str, list] = {}


def _read(template, context, factor):
    """Both pages of a sheet under the factor (all of them for 'all'), read once per test module."""
    if factor not in _READ:
        factors = FACTORS if factor == "all" else (factor,)
        _READ[factor] = []
        for page_no in (1, 2):
            page, info = _page_under(template, "hardphoto", 40 + page_no, photo_factors=factors, page=page_no)
            _READ[factor].append((process_page(page, context), info))
    return _READ[factor]


def _factors(not_yet: dict[str, str]) -> list:
    return [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=not_yet[f])) if f in not_yet else f
            for f in (*FACTORS, "all")]


@pytest.mark.parametrize("factor", _factors(NOT_FOUND_YET))
def test_every_written_row_is_found_under_each_factor(template, context, factor):
    for result, info in _read(template, context, factor):
        assert not [i for i in result.issues if i.code.startswith("page_")], result.issues
        _assert_every_row_found(result, info)


@pytest.mark.parametrize("factor", _factors(BLANKS_WRITTEN_YET))
def test_no_blank_row_is_written_under_each_factor(template, context, factor):
    for result, info in _read(template, context, factor):
        written = {r["row_number"] for r in info["rows"] if r["written"]}
        assert {r.row_number for r in result.rows if not r.is_blank} == written


# --- printed row numbers smeared past what Tesseract reads ---------------------------------------

@pytest.mark.parametrize(("seed", "page_no"), [(74, 1), (79, 2), (83, 2)])
def test_smeared_row_numbers_are_read_by_their_shape(template, context, seed, page_no, monkeypatch):
    """Shaken and at low resolution: Tesseract reads too few of the small printed numbers to number
    the rows; their shapes, placed as the printed sequence, number every row where the truth has it."""
    from scan_pipeline.page import grid

    page, info = _page_under(template, "hardphoto", seed, photo_factors=("blur", "lowres"), page=page_no)
    result = process_page(page, context)
    assert [r.row_number for r in result.rows] == list(template.rows_on_page(page_no))
    _assert_every_row_found(result, info)
    monkeypatch.setattr(grid, "_fit_by_shape", lambda *args: None)  # Tesseract's reads alone
    assert process_page(page, context).rows == ()


def test_a_table_without_numbers_is_not_numbered_by_shape(template):
    """Empty number cells (a ruled table of something else) match no printed sequence."""
    from scan_pipeline.page.grid import _fit_by_shape

    gray = np.full((900, 700), 245, np.uint8)
    xs = [50, 110, 400, 520, 650]
    ys = [100 + 40 * i for i in range(12)]
    for x in xs:
        gray[ys[0]:ys[-1], x - 1:x + 2] = 20
    for y in ys:
        gray[y - 1:y + 2, xs[0]:xs[-1]] = 20
    gray[ys[3] + 12:ys[3] + 28, 70:90] = 30  # one blot in a number cell
    assert _fit_by_shape(gray, [(None, xs, ys)], template) is None


# --- the grid's own frame, where the sheet's outline misleads -----------------------------------

CLUTTERED = ("clutter", "perspective", "shadow")


@pytest.mark.parametrize("seed", [60, 61])
def test_the_grid_frame_is_found_where_the_truth_puts_the_grid(template, seed):
    from scan_pipeline.page.frame import find_grid_frame
    from scan_pipeline.page.load import as_gray

    page, info = _page_under(template, "hardphoto", seed, photo_factors=CLUTTERED, page=1 + seed % 2)
    frame = find_grid_frame(as_gray(page.pixels))
    assert frame is not None
    first, last = info["rows"][0]["cells"], info["rows"][-1]["cells"]
    tolerance = 0.012 * page.pixels.shape[1]
    # the truth's cells are the boxes around the warped cells: their outer corners are the frame's
    assert np.abs(frame[3] - [last["row_number"][0], last["row_number"][3]]).max() < tolerance
    assert np.abs(frame[2] - [last["signature"][2], last["signature"][3]]).max() < tolerance
    header = first["row_number"][3] - first["row_number"][1]  # about a row high above the first row
    assert first["row_number"][1] - 2 * header < frame[0][1] < first["row_number"][1]


@pytest.mark.parametrize("seed", [60, 61])
def test_a_photo_on_a_cluttered_table_is_read_by_its_grid_frame(template, context, seed, monkeypatch):
    """Other papers beside the sheet and a shadow over it: the outline alone finds no grid here."""
    import scan_pipeline.run.process as process

    page, info = _page_under(template, "hardphoto", seed, photo_factors=CLUTTERED, page=1 + seed % 2)
    result = process_page(page, context)
    assert not [i for i in result.issues if i.code.startswith("page_")], result.issues
    _assert_every_row_found(result, info)
    monkeypatch.setattr(process, "_framed", lambda *args: None)
    assert process_page(page, context).rows == ()


def test_nothing_beside_the_grid_is_kept_on_a_framed_page(template):
    from scan_pipeline.page.frame import SIDE_PAD_MM, find_grid_frame, frame_page
    from scan_pipeline.page.load import as_gray
    from scan_pipeline.page.normalise import PHOTO_DPI

    page, _ = _page_under(template, "hardphoto", 60, photo_factors=CLUTTERED + ("thumb",), page=1)
    flat = frame_page(page, find_grid_frame(as_gray(page.pixels)), template.paper_mm, template.margin_mm)
    assert flat.photo and flat.pixels.shape[1] == round(template.paper_mm[0] * PHOTO_DPI / 25.4)
    beside = int((template.margin_mm - SIDE_PAD_MM) * PHOTO_DPI / 25.4) - 1
    assert (flat.pixels[:, :beside] == 255).all() and (flat.pixels[:, -beside:] == 255).all()
    assert (flat.pixels[:, beside + 30:-beside - 30] < 128).any()  # the grid itself is kept


# --- a photo that cannot be used says why, and what to do -----------------------------------------

def test_each_cause_of_an_unusable_photo_is_measured_and_named(template):
    from scan_pipeline.core.records import PageImage
    from scan_pipeline.page.normalise import normalise_page
    from scan_pipeline.page.quality import photo_problems

    page, _ = _page_under(template, "hardphoto", 41, photo_factors=("perspective",), page=1)
    assert photo_problems(page, normalise_page(page), 297) == []  # a readable photo: nothing to say
    dark = PageImage(page.ref, (page.pixels * 0.3).astype(np.uint8), page.dpi)
    assert [p.split(" (")[0] for p in photo_problems(dark, normalise_page(dark), 297)] == ["the photo is too dark"]
    small_pixels = cv2.resize(page.pixels, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    small = PageImage(page.ref, small_pixels, page.dpi / 2)
    said = photo_problems(small, normalise_page(small), 297)
    assert len(said) == 1 and said[0].startswith("the sheet is too small in the photo (about ")
    cut = PageImage(page.ref, np.ascontiguousarray(page.pixels[page.pixels.shape[0] // 3:]), page.dpi)
    assert "an edge or a corner of the sheet is out of the photo" in photo_problems(cut, normalise_page(cut), 297)


def test_a_scan_without_a_grid_gets_no_photo_advice(context):
    from scan_pipeline.core.records import PageImage, PageRef

    blank = PageImage(PageRef("blank.png", 1, "0" * 64), np.full((3508, 2480, 3), 250, np.uint8), 300)
    codes = [i.code for i in process_page(blank, context).issues]
    assert "page_no_grid" in codes and "page_photo_unusable" not in codes


def test_a_shaken_photo_says_why_and_what_to_do_end_to_end(template, tmp_path, monkeypatch):
    import subprocess

    from PIL import Image

    from scan_pipeline.page.quality import ADVICE
    from scan_pipeline.synth import photos

    from .conftest import SCRIPT

    scans = tmp_path / "photos"
    scans.mkdir()
    good, _ = _page_under(template, "hardphoto", 41, photo_factors=("perspective",), page=1)
    Image.fromarray(good.pixels).save(scans / "good.jpg", quality=85)
    monkeypatch.setattr(photos, "BLUR_PX", (25, 25))  # far past what a person still reads
    page, _ = _page_under(template, "hardphoto", 41, photo_factors=("blur",), page=1)
    Image.fromarray(page.pixels).save(scans / "shaken.jpg", quality=85)
    done = subprocess.run([str(SCRIPT), "process", str(scans), "--ledger", str(tmp_path / "L.csv"),
                           "--report", str(tmp_path / "run.html")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 10, done.stderr  # one page failed, the other is in the ledger
    assert "this photo cannot be used: the photo is blurred or shaken (sharpness " in done.stderr
    assert ADVICE in done.stderr
    assert ADVICE in (tmp_path / "run.html").read_text(encoding="utf-8")


# --- partial pages ----------------------------------------------------------------------------

def test_a_partial_scan_gives_its_rows_and_names_the_missing_ones(template, context):
    from scan_pipeline.core.records import PageImage

    page, info = _page_under(template, "scan", 26, page=2, upside_down=False, angle=0.5)
    cut = PageImage(page.ref, np.ascontiguousarray(page.pixels[: int(page.pixels.shape[0] * 0.62)]), page.dpi)
    result = process_page(cut, context)
    found = [r.row_number for r in result.rows]
    assert found and found == list(template.rows_on_page(2))[:len(found)] and len(found) < 24
    missing = template.rows_on_page(2)[len(found):]
    issue = next(i for i in result.issues if i.code == "page_rows_count")
    assert issue.message.endswith(f"row(s) {missing[0]}-{missing[-1]} not found"), issue.message
    assert "whole sheet in view" in issue.hint


def test_a_photo_that_cuts_the_sheet_gives_the_rows_it_shows_and_names_the_rest(template, context):
    """The sheet's outline is cut by the photo's edge; the grid's own frame still straightens it."""
    from scan_pipeline.core.records import PageImage

    page, _ = _page_under(template, "photo", 24, page=2)
    cut = PageImage(page.ref, np.ascontiguousarray(page.pixels[: int(page.pixels.shape[0] * 0.62)]), page.dpi)
    result = process_page(cut, context)
    found = [r.row_number for r in result.rows]
    printed = list(template.rows_on_page(2))
    assert len(found) >= 8 and found == printed[:len(found)] and len(found) < 24
    issue = next(i for i in result.issues if i.code == "page_rows_count")
    assert issue.message.endswith(f"row(s) {printed[len(found)]}-{printed[-1]} not found"), issue.message
    assert "whole sheet in view" in issue.hint


# --- a photo shaken across the grid's vertical lines ----------------------------------------------

def _ruled_rows(columns: tuple[int, ...], smear: int) -> np.ndarray:
    """Twelve ruled rows from x=100 to x=900 with writing in them, the vertical lines at `columns`
    smeared sideways over `smear` pixels as a phone shaken across them leaves them."""
    rng = np.random.default_rng(5)
    img = np.full((700, 1000), 235, np.uint8)
    verticals = np.full_like(img, 235)
    for x in columns:
        cv2.line(verticals, (x, 100), (x, 580), 40, 3)
    img = np.minimum(img, cv2.blur(verticals, (smear, 1)))
    for y in range(100, 581, 40):
        cv2.line(img, (100, y), (900, y), 40, 3)
    for y in range(100, 580, 40):  # a few words a row, never at the lines
        for x in rng.integers(120, 860, 3):
            cv2.putText(img, "Ab", (int(x), y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 60, 2)
    return img


def test_smeared_column_lines_are_found_by_their_darkness_in_every_row():
    from scan_pipeline.core.records import Box
    from scan_pipeline.page.grid import _vertical_lines, faint_columns, page_masks

    columns = (100, 180, 560, 740, 900)
    gray = _ruled_rows(columns, smear=21)
    masks, box = page_masks(gray), Box(90, 90, 911, 591)
    assert len(_vertical_lines(masks, box)) < len(columns)  # the line mask has lost them
    found = faint_columns(gray, masks, box, 10)
    assert len(found) == len(columns) and np.abs(np.array(found) - columns).max() <= 3, found


def test_a_frame_without_vertical_lines_is_taken_from_the_ends_of_its_rows():
    from scan_pipeline.page.frame import _frame_of

    lines = np.zeros((700, 1000), np.uint8)
    for y in range(100, 581, 40):
        cv2.line(lines, (100, y), (900, y), 255, 3)
    cv2.line(lines, (60, 30), (940, 30), 255, 3)  # a title's rule, longer and a paragraph above
    frame = _frame_of(lines, cv2.dilate(lines, np.ones((3, 3), np.uint8)))
    assert frame is not None
    assert np.abs(frame - [[100, 100], [900, 100], [900, 580], [100, 580]]).max() <= 4, frame  # a line wide


def test_rows_of_one_pitch_are_told_from_a_paragraph_and_a_crease():
    from scan_pipeline.page.frame import _evenly_spaced

    paragraph = [10.0, 22.0, 34.0, 46.0]
    grid = [100.0, 140.0, 181.0, 262.0, 301.0, 342.0]  # 221 lost under a shadow
    crease = [160.0]
    assert _evenly_spaced(sorted(paragraph + grid + crease), 6.0) == [4, 5, 7, 8, 9, 10]
    assert _evenly_spaced([10.0, 200.0], 6.0) == []


def test_a_table_of_many_narrow_columns_gives_no_faint_columns():
    from scan_pipeline.core.records import Box
    from scan_pipeline.page.grid import faint_columns, page_masks

    gray = _ruled_rows(tuple(range(100, 901, 40)), smear=21)
    masks, box = page_masks(gray), Box(90, 90, 911, 591)
    assert len(faint_columns(gray, masks, box, 30)) == 21  # they are found...
    assert faint_columns(gray, masks, box, 10) == []  # ...but are more than the grid has
