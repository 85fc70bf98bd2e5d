"""cells: where a line's ink has gaps wide enough to part two words."""

from __future__ import annotations

import numpy as np

from scan_pipeline.page.cells import ink_box, ink_gaps, text_height, trim_to_ink, word_gaps


def _line(blocks: list[tuple[int, int]], height: int = 30) -> np.ndarray:
    """White line with black letter blocks at [x0, x1) columns, 20 px high."""
    img = np.full((height, max(x1 for _, x1 in blocks) + 5), 255, np.uint8)
    for x0, x1 in blocks:
        img[5:25, x0:x1] = 0
    return img


def test_ink_gaps_are_the_blank_runs_between_ink():
    assert ink_gaps(_line([(2, 10), (13, 20), (40, 50)])) == [(10, 13), (20, 40)]
    assert ink_gaps(np.full((10, 10), 255, np.uint8)) == []


def test_a_wide_gap_among_narrow_ones_is_a_word_gap():
    line = _line([(2, 10), (12, 20), (22, 30), (45, 53), (55, 63)])
    assert text_height(line) >= 15
    assert word_gaps(line, 0.25, 2.0) == [(30, 45)]


def test_letters_written_apart_have_no_word_gap():
    # block capitals with even, wide gaps: none stands out
    line = _line([(2, 10), (20, 28), (38, 46), (56, 64), (74, 82)])
    assert word_gaps(line, 0.25, 2.0) == []


def test_widest_word_gap_comes_first():
    line = _line([(2, 10), (12, 20), (32, 40), (42, 50), (70, 78), (80, 88)])
    assert word_gaps(line, 0.25, 2.0) == [(50, 70), (20, 32)]


def test_ink_box_pads_within_the_crop():
    line = _line([(2, 10)])
    box = ink_box(line, pad=4)
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 1, 14, 29)
    assert trim_to_ink(line, pad=4).shape == (28, 14)
    assert ink_box(np.full((10, 10), 255, np.uint8)) is None


def test_a_mark_far_beside_the_writing_is_dropped_but_not_a_letter():
    from scan_pipeline.page.cells import clean_cell

    h = 100  # a cell cut with margin 0.12: its ruled lines ran 11 px inside the top and bottom
    cell = np.full((h, 900), 255, np.uint8)
    for x in range(40, 400, 30):  # a name: letters 20 px wide, 40 px high, in the middle of the cell
        cell[30:70, x:x + 20] = 0
    cell[45:49, 850:854] = 0  # a pen touch at the cell's far end
    cleaned = clean_cell(cell, 0.12)
    box = ink_box(cleaned, pad=0)
    assert (box.x0, box.x1) == (40, 390)  # the writing kept whole, the mark gone
    cell[30:70, 700:720] = 0  # an initial written far after the name is writing: kept
    assert ink_box(clean_cell(cell, 0.12), pad=0).x1 == 720
