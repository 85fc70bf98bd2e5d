"""Normalisation and grid finding on generated pages, checked against the generator's truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scan_pipeline.core.records import Box
from scan_pipeline.page.grid import find_grid, fit_numbers
from scan_pipeline.page.load import expand_inputs, iter_pages
from scan_pipeline.page.normalise import estimate_skew, normalise_page, turn_upside_down
from scan_pipeline.page.pixels import runs
from scan_pipeline.read.engines import tesseract_engine
from scan_pipeline.run.process import WorkerContext, process_page

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


def test_fit_leaves_extra_rows_unnumbered(template):
    reads = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, None, None]]  # two lines of text under the grid taken for rows
    page, numbers, agree = fit_numbers(reads, template)
    assert page == 1 and numbers[0] == [*range(1, 11), None, None] and agree == 10


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
    from scan_pipeline.core.records import PageImage, PageRef

    page = PageImage(PageRef("blank.png", 1, "0" * 64), np.full((3508, 2480), 255, np.uint8), 300)
    result = process_page(page, WorkerContext.build(template))
    assert result.rows == ()
    assert any(i.code == "page_no_grid" for i in result.issues)


# --- targeted conditions (issue 4): each asserts row numbers and cell boxes against the truth ------

def _page_under(template, mode, seed, **conditions):
    from scan_pipeline.core.postcodes import load_postal_list
    from scan_pipeline.core.records import PageImage, PageRef
    from scan_pipeline.page.load import _to_array
    from scan_pipeline.synth.samples import Conditions, _style, make_page, people_from

    rng = np.random.default_rng(seed)
    page_no = conditions.pop("page", 2)
    people = people_from(tuple(load_postal_list().codes), rng)
    image, info = make_page(template, page_no, mode, rng, people, _style(rng, template), 300,
                            conditions=Conditions(**conditions))
    return PageImage(PageRef(f"{mode}-{seed}.png", 1, f"{seed:064x}"), _to_array(image), info["dpi"]), info


def _assert_every_row_found(result, info, scale=1.0):
    assert result.sheet_page == info["sheet_page"]
    found = {r.row_number: dict(r.boxes) for r in result.rows}
    for row in info["rows"]:
        if not row["written"]:
            continue
        assert row["row_number"] in found, row["row_number"]
        for column in ("name", "postal_code", "signature"):
            truth_box = Box(*[int(round(v * scale)) for v in row["cells"][column]])
            assert found[row["row_number"]][column].iou(truth_box) > 0.6, (row["row_number"], column)


@pytest.fixture(scope="module")
def context(template):
    return WorkerContext.build(template)


@pytest.mark.parametrize("angle", [-5.0, 5.0])
def test_rotated_five_degrees(template, context, angle):
    page, info = _page_under(template, "scan", 21, angle=angle, upside_down=False)
    result = process_page(page, context)
    assert abs(result.quality.skew_deg + angle) < 0.2 or abs(result.quality.skew_deg - angle) < 0.2
    _assert_every_row_found(result, info)


def test_upside_down(template, context):
    page, info = _page_under(template, "gray", 22, angle=1.5, upside_down=True, page=1)
    result = process_page(page, context)
    assert result.quality.rotation == 180
    _assert_every_row_found(result, info)


def test_150_dpi_bilevel(template, context):
    page, info = _page_under(template, "bilevel", 23, dpi=150, upside_down=False)
    _assert_every_row_found(process_page(page, context), info)


def test_photo_in_perspective_on_a_table(template, context):
    page, info = _page_under(template, "photo", 24)
    result = process_page(page, context)
    _assert_every_row_found(result, info)


def test_sheet_printed_at_90_percent(template, context):
    page, info = _page_under(template, "scan", 25, scale=0.9, angle=0.7, upside_down=False, page=1)
    _assert_every_row_found(process_page(page, context), info)


def test_a_blurred_row_number_is_placed_by_its_neighbours(template, context):
    page, info = _page_under(template, "gray", 26, blurred_numbers=(14, 27), upside_down=False)
    result = process_page(page, context)
    _assert_every_row_found(result, info)
    assert [r.row_number for r in result.rows] == list(template.rows_on_page(2))


def test_broken_ruled_lines(template, context):
    page, info = _page_under(template, "gray", 27, broken_lines=True, upside_down=False, angle=-1.2)
    _assert_every_row_found(process_page(page, context), info)


def test_ruled_lines_below_the_last_row_are_not_rows(template, context):
    """A table that seems to go on under the grid (ruled lines, a notice in boxes) after the page's
    last printed number: no extra row, no false 'rows found' failure."""
    import cv2

    page, info = _page_under(template, "scan", 28, upside_down=False, angle=0.0)
    last = max((r for r in info["rows"]), key=lambda r: r["row_number"])
    x0 = last["cells"]["row_number"][0]
    xs = [last["cells"][c][0] for c in ("row_number", "name", "postal_code", "signature")]
    xs.append(last["cells"]["signature"][2])
    bottom, height = last["cells"]["name"][3], last["cells"]["name"][3] - last["cells"]["name"][1]
    pixels = page.pixels.copy()
    for k in (1, 2):
        cv2.line(pixels, (int(x0), int(bottom + k * height)), (int(xs[-1]), int(bottom + k * height)), 0, 3)
    for x in xs:
        cv2.line(pixels, (int(x), int(bottom)), (int(x), int(bottom + 2 * height)), 0, 3)
    result = process_page(type(page)(page.ref, pixels, page.dpi), context)
    _assert_every_row_found(result, info)
    assert [r.row_number for r in result.rows] == list(template.rows_on_page(2))
    assert not [i for i in result.issues if i.code in ("page_rows_count", "row_unnumbered")], result.issues


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(0, 3))
def test_runs_of_true_joined_across_short_gaps(flags, join):
    found = runs(np.array(flags, bool), join)
    covered = [i for a, b in found for i in range(a, b)]
    assert all(flags[a] and flags[b - 1] for a, b in found)  # each run starts and ends on True
    assert {i for i, f in enumerate(flags) if f} <= set(covered)  # every True is in a run
    assert all(b2 - a2 > 0 and a2 - b1 > join for (_, b1), (a2, b2) in zip(found, found[1:]))  # apart > join
    assert all(not any(flags[b1:a2]) for (_, b1), (a2, _) in zip(found, found[1:]))  # gaps are all False
