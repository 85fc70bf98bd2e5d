"""Normalisation and grid finding on generated pages, checked against the generator's truth."""

from __future__ import annotations

import numpy as np
import pytest

from scan_pipeline.engines import tesseract_engine
from scan_pipeline.grid import find_grid, fit_numbers
from scan_pipeline.load import expand_inputs, iter_pages
from scan_pipeline.normalise import estimate_skew, normalise_page, turn_upside_down
from scan_pipeline.pipeline import WorkerContext, process_page
from scan_pipeline.records import Box

from .conftest import load_truth


@pytest.fixture(scope="module")
def engine():
    return tesseract_engine()


def test_fit_corrects_a_misread_number_by_its_neighbours(template):
    reads = [[11, 12, 18, 14, 15, 16, 17, 18, 19, 20, 22, None, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35]]
    page, numbers, agree = fit_numbers(reads, template)
    assert page == 2
    assert numbers[0][2] == 13 and numbers[0][11] == 23
    assert 21 not in numbers[0]  # the real gap is kept
    assert agree == 22


def test_fit_tells_the_page_from_its_numbers(template):
    page, numbers, _ = fit_numbers([[1, 2, 3, None, 5, 6, 7, 8, 9, 10]], template)
    assert page == 1 and numbers == [list(range(1, 11))]


def test_fit_places_a_partial_block(template):
    page, numbers, _ = fit_numbers([[None, 31, 32, 33, 34, 35]], template)
    assert page == 2 and numbers == [[30, 31, 32, 33, 34, 35]]


def test_fit_ignores_a_block_that_is_not_the_grid(template):
    page, numbers, _ = fit_numbers([[None, 2], [11, 12, 13, None, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27,
                                                28, 29, 30, 31, 32, 33, 34, 35]], template)
    assert page == 2 and numbers[0] is None and numbers[1][3] == 14


def test_fit_refuses_to_guess(template):
    page, _, agree = fit_numbers([[None] * 10], template)
    assert agree == 0


def _pages(corpus):
    truth = load_truth(corpus)
    for f in truth["files"]:
        item = expand_inputs([str(corpus / f["file"])])[0][0]
        for page, facts in zip(iter_pages(item), f["pages"]):
            yield f, page, facts


def _source_scale(f, facts, page):
    return page.pixels.shape[1] / facts["pixel_size"][0]


def test_deskew_is_precise(mixed_corpus):
    for f, page, facts in _pages(mixed_corpus):
        flat = normalise_page(page)
        residual = estimate_skew(flat.pixels)
        assert abs(residual) < 0.2, (f["file"], facts["rotation_deg"], flat.skew_deg, residual)
        assert flat.photo == (f["mode"] == "photo"), f["file"]  # a scan is never warped as a photo


def test_every_row_found_in_every_mode(mixed_corpus, template, engine):
    """Row numbers and cell boxes against the truth, through real Tesseract, in every mode."""
    ctx = WorkerContext.build(template)
    for f, page, facts in _pages(mixed_corpus):
        result = process_page(page, ctx)
        assert result.sheet_page == facts["sheet_page"], f["file"]
        found = {r.row_number: dict(r.boxes) for r in result.rows}
        scale = _source_scale(f, facts, page)
        for row in facts["rows"]:
            if not row["written"]:
                continue
            assert row["row_number"] in found, (f["file"], row["row_number"])
            truth_box = Box(*[int(round(v * scale)) for v in row["cells"]["name"]])
            assert found[row["row_number"]]["name"].iou(truth_box) > 0.5, (f["file"], row["row_number"])


def test_upside_down_page_is_turned(scan_corpus, template, engine):
    f, page, facts = next(_pages(scan_corpus))
    flat = normalise_page(page)
    search = find_grid(turn_upside_down(flat), template, engine)
    assert search.upside_down
    assert find_grid(flat, template, engine).grid is not None


def test_blank_page_is_reported_not_guessed(template):
    from scan_pipeline.records import PageImage, PageRef

    page = PageImage(PageRef("blank.png", 1, "0" * 64), np.full((3508, 2480), 255, np.uint8), 300)
    result = process_page(page, WorkerContext.build(template))
    assert result.rows == ()
    assert any(i.code == "page_no_grid" for i in result.issues)
