"""Names: ledger form, lexicon, CTC scoring, and generated cells read through real Tesseract (and the
PP-OCR recognition model where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from scan_pipeline.core.config import load_config
from scan_pipeline.core.ocr import OcrResult
from scan_pipeline.core.records import FieldReading
from scan_pipeline.core.text import fold
from scan_pipeline.read.engines import rapid_engine, tesseract_engine
from scan_pipeline.read.lexicon import ALPHABET, load_lexicon
from scan_pipeline.read.names import (
    _BLANK,
    _CLASSES,
    _choose_words,
    best_path,
    choose_word,
    clean_text,
    ctc_log_likelihood,
    ledger_form,
    read_name,
)

CONFIG = load_config().names


@pytest.fixture(scope="module")
def tess():
    return tesseract_engine()


@pytest.fixture(scope="module")
def second():
    return rapid_engine()


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


def _cell(text: str, height: int = 70, width: int = 520) -> np.ndarray:
    """A name cell as cut from a 200 dpi sheet: gray, dark ink on white, a little margin."""
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 34)
    img = Image.new("L", (width, height), 250)
    ImageDraw.Draw(img).text((14, 14), text, font=font, fill=25)
    return np.asarray(img).copy()


# --- ledger form and accents ----------------------------------------------------------------------

@pytest.mark.parametrize("written, expected", [
    ("DUPONT Hélène", "DUPONT Hélène"),
    ("Hélène DUPONT", "DUPONT Hélène"),
    ("lefèvre jérôme", "LEFÈVRE Jérôme"),
    ("ÇELIK Anaïs", "ÇELIK Anaïs"),
    ("LE GOFF Jean-baptiste", "LE GOFF Jean-Baptiste"),
    ("  DUPONT   -  Marie ", "DUPONT-MARIE"),
])
def test_ledger_form(written, expected):
    assert ledger_form(clean_text(written)) == expected


def test_accented_name_round_trips_through_a_field_reading():
    value = ledger_form(clean_text("BÉRANGER Françoise"))
    field = FieldReading(value, "BÉRANGER Françoise", 0.95, "accept")
    assert field.value == "BÉRANGER Françoise"
    assert ledger_form(field.value) == field.value  # idempotent
    assert fold(field.value) == "BERANGER FRANCOISE"


# --- lexicon and scoring --------------------------------------------------------------------------

def test_lexicon_is_credited_and_has_accents(lexicon):
    assert len(lexicon) > 200_000
    assert lexicon.given_spelling("HELENE") == "Hélène"
    assert lexicon.is_surname("MARTIN") and lexicon.is_given("MARIE")
    assert all(d <= 1 for _, d in lexicon.near("DUPOMT", 1)) and ("DUPONT", 1) in lexicon.near("DUPOMT", 1)


@pytest.mark.parametrize("word", ["DUPOMT", "MARIE", "JEAN-PIERRE", "LEFEBVRE", "AAA", "O'NEIL", "ZZQX", "BÉ"])
def test_lexicon_near_finds_what_a_full_scan_finds(lexicon, word):
    from rapidfuzz.distance import Levenshtein

    # the letter-mask pre-filter may only skip keys that are too far: compare with every key of a length in reach
    for k in (1, 2):
        full = sorted((key, d) for key in lexicon.keys if abs(len(key) - len(word)) <= k
                      and (d := Levenshtein.distance(word, key)) <= k)
        assert sorted(lexicon.near(word, k)) == full


def test_lexicon_built_from_rows_in_any_order():
    from scan_pipeline.read.lexicon import Lexicon

    rows = [("ZOE", 1, 9, "Zoé"), ("AB", 0, 1, ""), ("A'B-Ω", 2, 2, ""), ("AA", 3, 9, ""), ("ANNA", 0, 0, "Anna")]
    ordered = sorted(rows, key=lambda r: (len(r[0]), r[0]))
    for lexicon in (Lexicon(*map(list, zip(*rows))), Lexicon(*map(list, zip(*ordered)))):
        assert lexicon.keys == ["AA", "AB", "ZOE", "ANNA", "A'B-Ω"]  # by length, then key
        assert lexicon.given_spelling("ZOE") == "Zoé" and lexicon.surname_tier_of("AB") == 1
        assert lexicon.near("ANA", 1) == [("ANNA", 1), ("AA", 1)]  # the more common first
        assert lexicon.near("AB-Ω", 1) == [("A'B-Ω", 1)]


def _frames(word: str, noise: float = 0.05) -> np.ndarray:
    """Folded frames that spell `word`: letter, blank, letter, blank..."""
    rows = []
    for c in word:
        for k in (1 + ALPHABET.index(c), _BLANK):
            row = np.full(_CLASSES, noise / _CLASSES)
            row[k] += 1 - noise
            rows.append(row)
    return np.array(rows)


def test_ctc_prefers_what_the_frames_spell():
    frames = _frames("DUPONT")
    ll = ctc_log_likelihood(frames, ["DUPONT", "DUPOND", "DUPONTS", "TNOPUD"])
    assert ll.argmax() == 0 and ll[0] > ll[1] + 2
    assert [w for w, _, _ in best_path(frames)] == ["DUPONT"]


def test_a_correction_stays_close_to_what_was_read(lexicon):
    # an unknown surname read clearly is kept, never replaced by a distant common name
    frames = _frames("XQZWVY", noise=0.01)
    assert choose_word(frames, ["XQZWVY"], lexicon, CONFIG).key == "XQZWVY"
    # a common name one smudged letter away is preferred when the ink hesitates
    frames = _frames("MARTIN")
    frames[10] = frames[10] * 0.5 + _frames("M")[0] * 0.5  # the N looks a little like an M
    assert choose_word(frames, ["MARTIM"], lexicon, CONFIG).key == "MARTIN"


# --- read_name ------------------------------------------------------------------------------------

def test_no_ink_is_an_empty_accepted_field(tess):
    field, flags = read_name(np.full((60, 400), 255, np.uint8), False, tess, CONFIG)
    assert field == FieldReading("", "", 1.0, "accept") and flags == ()


def test_specks_are_unreadable(tess):
    cell = np.full((60, 400), 255, np.uint8)
    cell[30:32, 200:202] = 0
    field, flags = read_name(cell, True, tess, CONFIG)
    assert field.band == "reject" and "name_unreadable" in flags


class _FailingEngine:
    name = "broken"

    def read_line(self, image, whitelist=None):
        return OcrResult("", 0.0)


def test_an_engine_that_reads_nothing_gives_unreadable():
    field, flags = read_name(_cell("DUPONT Marie"), True, _FailingEngine(), CONFIG)
    assert field.band == "reject" and flags == ("name_unreadable",)


@pytest.mark.parametrize("written, expected", [
    ("DUPONT Marie", "DUPONT Marie"),
    ("MARTIN Hélène", "MARTIN Hélène"),
    ("Jérôme LEFEBVRE", "LEFEBVRE Jérôme"),
    ("MARTIN HELENE", "MARTIN Hélène"),
])
def test_generated_cells_through_real_engines(tess, second, written, expected):
    field, flags = read_name(_cell(written), True, tess, CONFIG, second)
    assert fold(field.value) == fold(expected)
    assert field.raw  # the raw reading is kept for the ledger's name_ocr
    if second is not None:
        assert field.value == expected  # accents restored from the lexicon's usual spelling
        assert field.confidence > 0.5


def test_tesseract_alone_still_reads_but_never_accepts(tess):
    field, _ = read_name(_cell("DUPONT Marie"), True, tess, CONFIG)
    assert fold(field.value) == "DUPONT MARIE"
    assert field.band != "accept"


# --- words: where a line parts ---------------------------------------------------------------------

def _keys(found):
    return [c.key for c, _, _ in found]


def test_a_space_the_model_missed_is_found_at_a_gap(lexicon):
    # the model read BONNETANAIS in one piece (low resolution); the ink has a wide gap after BONNET
    frames = _frames("BONNETANAIS")
    words = best_path(frames)
    assert [w for w, _, _ in words] == ["BONNETANAIS"]
    assert _keys(_choose_words(frames, words, [12], ["BONNET", "ANAIS"], lexicon, CONFIG)) == ["BONNET", "ANAIS"]
    assert _keys(_choose_words(frames, words, [12], [], lexicon, CONFIG)) == ["BONNET", "ANAIS"]
    # without a gap there, the line stays one word
    assert _keys(_choose_words(frames, words, [], [], lexicon, CONFIG)) == ["BONNETANAIS"]


def test_a_gap_inside_a_known_name_does_not_split_it(lexicon):
    frames = _frames("BERNARD")  # letters written apart: a gap after BER
    words = best_path(frames)
    assert _keys(_choose_words(frames, words, [6], ["BERNARD"], lexicon, CONFIG)) == ["BERNARD"]


def test_two_names_written_close_are_read_as_two(tess, second):
    if second is None:
        pytest.skip("the second name reader is not installed")
    cell = _cell("BONNET  ANAIS", height=40, width=300)
    small = np.asarray(Image.fromarray(cell).resize((180, 24), Image.Resampling.LANCZOS))
    field, _ = read_name(small, True, tess, CONFIG, second)
    assert field.value == "BONNET Anaïs"


def test_a_lone_letter_is_never_split_off(lexicon):
    frames = _frames("HERRX")  # Tesseract read `HERR X`
    words = best_path(frames)
    assert len(_keys(_choose_words(frames, words, [8], ["HERR", "X"], lexicon, CONFIG))) == 1


def test_an_unknown_surname_is_not_glued_to_the_given_name_across_a_clear_gap(lexicon):
    # the model saw the space; as one unknown word the line pays the prior of a word no lexicon knows
    # once instead of once plus a common given name's: a tie, that the gap in the ink decides
    surname = "ZORBAXQU"
    assert surname not in lexicon and "MARIE" in lexicon
    row = np.full(_CLASSES, 0.05 / _CLASSES)
    row[_CLASSES - 2] += 0.95  # the space class
    frames = np.vstack([_frames(surname), row[None], _frames("MARIE")])
    words = best_path(frames)
    assert [w for w, _, _ in words] == [surname, "MARIE"]
    gap = 2 * len(surname)
    assert _keys(_choose_words(frames, words, [gap], [], lexicon, CONFIG, {gap})) == [surname, "MARIE"]
    # a known name written with a gap inside it is still one word (BERNARD, above)
    frames = _frames("BERNARD")
    assert _keys(_choose_words(frames, best_path(frames), [6], [], lexicon, CONFIG, {6})) == ["BERNARD"]
