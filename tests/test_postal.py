"""Tests for the bundled postal code list and the first postal code decoder."""

from __future__ import annotations

import gzip
import math
import pickle
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scan_pipeline.core.postcodes import PostalList, load_postal_list
from scan_pipeline.core.records import FieldReading
from scan_pipeline.read.postal import PostalDecision, decode_postal_text, normalise_written_code


@pytest.fixture(scope="module")
def plist() -> PostalList:
    return load_postal_list()


@pytest.fixture()
def tiny() -> PostalList:
    return PostalList.from_rows([
        ("75011", "75", ["Paris 11e Arrondissement"]),
        ("75012", "75", ["Paris 12e Arrondissement"]),
        ("12345", "12", ["Alpha", "Béta"]),
        ("01000", "01", ["Bourg-en-Bresse"]),
    ])


# --- the bundled list ---------------------------------------------------------------------------

def test_list_counts(plist: PostalList) -> None:
    assert len(plist.codes) == 6201
    assert sum(c.startswith("0") for c in plist.codes) == 431
    assert list(plist.codes) == sorted(set(plist.codes))
    assert all(len(c) == 5 and c.isascii() and c.isdigit() for c in plist.codes)


def test_data_file_is_package_data_with_expected_header() -> None:
    blob = (resources.files("scan_pipeline") / "data" / "postal_codes.csv.gz").read_bytes()
    assert len(blob) < 250_000
    text = gzip.decompress(blob).decode("utf-8")
    assert text.startswith("postal_code,departement,communes\n")
    assert text.count("\n") == 6202


def test_known_codes(plist: PostalList) -> None:
    assert "75011" in plist
    assert "Paris" in plist.commune_label("75011")
    assert plist.departement("75011") == "75"
    assert "Saint-Denis-lès-Bourg" in plist.communes("01000")  # accents kept
    assert plist.departement("01000") == "01"
    assert "Boulogne-Billancourt" in plist.communes("75016")
    assert plist.departement("75016") == "75"  # the prefix's departement wins over 92


def test_corsica_and_overseas_departements(plist: PostalList) -> None:
    assert plist.departement("20000") == "2A"  # Ajaccio
    assert plist.departement("20200") == "2B"  # Bastia
    assert plist.departement("97400") == "974"
    assert plist.departement("97500") == "975"
    assert not any(c.startswith(("2A", "2B")) for c in plist.codes)
    deps = set(plist.departement_by_code.values())
    assert {"2A", "2B", "971", "972", "973", "974", "975", "976"} <= deps
    assert "20" not in deps and "97" not in deps


def test_documented_gaps(plist: PostalList) -> None:
    # codes-postaux has no 98x, Saint-Barthélemy or Saint-Martin: we must not invent them.
    assert not any(c.startswith("98") for c in plist.codes)
    assert "97133" not in plist and "97150" not in plist


def test_unknown_code_lookups(plist: PostalList) -> None:
    assert "99999" not in plist
    assert 75011 not in plist  # type: ignore[operator]
    assert plist.communes("99999") == ()
    assert plist.departement("99999") == ""
    assert plist.commune_label("99999") == ""


def test_commune_label_joins(tiny: PostalList) -> None:
    assert tiny.commune_label("12345") == "Alpha, Béta"


def test_loader_is_cached_and_picklable(plist: PostalList) -> None:
    assert load_postal_list() is plist
    copy = pickle.loads(pickle.dumps(plist))
    assert copy == plist
    assert copy.neighbours("75011") == plist.neighbours("75011")


def test_postal_list_rejects_bad_codes() -> None:
    with pytest.raises(ValueError):
        PostalList.from_rows([("7501", "75", ["x"])])
    with pytest.raises(ValueError):
        PostalList.from_rows([("2A004", "2A", ["x"])])
    with pytest.raises(ValueError):
        PostalList.from_rows([("75011", "75", ["x"]), ("75011", "75", ["y"])])


# --- neighbours -----------------------------------------------------------------------------------

def _hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_neighbours_tiny(tiny: PostalList) -> None:
    assert tiny.neighbours("75011") == ["75012"]
    assert tiny.neighbours("75013") == ["75011", "75012"]
    assert tiny.neighbours("75011", max_distance=0) == []
    assert tiny.neighbours("99999") == []
    assert tiny.neighbours("75099", max_distance=2) == ["75011", "75012"]


def test_neighbours_bad_input(tiny: PostalList) -> None:
    for bad in ("7501", "750111", "7501a", "²0000"):
        with pytest.raises(ValueError):
            tiny.neighbours(bad)


@settings(max_examples=60, deadline=None)
@given(code=st.text(alphabet="0123456789", min_size=5, max_size=5), distance=st.integers(1, 2))
def test_neighbours_match_brute_force(plist: PostalList, code: str, distance: int) -> None:
    expected = [c for c in plist.codes if 0 < _hamming(c, code) <= distance]
    assert plist.neighbours(code, distance) == expected


# --- normalise_written_code ----------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("75011", "75011"),
    ("75 011", "75011"),
    (" 75.011 ", "75011"),
    ("75-011", "75011"),
    ("75\u00a0011", "75011"),
    ("O6I00", "06100"),
    ("oQD", "000"),
    ("Il|!", "1111"),
    ("Z", "2"),
    ("Ss", "55"),
    ("B", "8"),
    ("G", "6"),
    ("T", "7"),
    ("gq", "99"),
    ("７５０１１", "75011"),  # full-width digits
    ("abc", ""),
    ("", ""),
    ("7501", "7501"),
    ("750112", "750112"),
])
def test_normalise(raw: str, expected: str) -> None:
    assert normalise_written_code(raw) == expected


# --- decode_postal_text ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_decode_missing(plist: PostalList, raw: str) -> None:
    d = decode_postal_text(raw, 0.99, plist)
    assert (d.value, d.raw, d.band, d.valid, d.confidence) == ("", raw, "reject", False, 0.0)
    assert d.flags == ("postal_missing",)


def test_decode_exact_accept(plist: PostalList) -> None:
    d = decode_postal_text("75 011", 0.93, plist)
    assert d.value == "75011" and d.raw == "75 011"
    assert d.valid and d.band == "accept" and d.confidence == pytest.approx(0.93)
    assert "Paris" in d.commune
    assert d.flags == ()


def test_decode_exact_low_confidence(plist: PostalList) -> None:
    d = decode_postal_text("75011", 0.5, plist)
    assert d.value == "75011" and d.valid and d.band == "review"
    assert "postal_low_conf" in d.flags
    assert decode_postal_text("75011", 0.85, plist, accept_confidence=0.9).band == "review"
    assert decode_postal_text("75011", 0.8, plist).band == "accept"  # threshold is inclusive


def test_decode_letters_mapped(plist: PostalList) -> None:
    d = decode_postal_text("75O1l", 0.9, plist)
    assert d.value == "75011" and d.valid
    assert "postal_letters_mapped" in d.flags


def test_decode_leading_zero(plist: PostalList) -> None:
    high = decode_postal_text("1000", 0.95, plist)
    assert high.value == "01000" and high.valid and high.band == "accept"
    assert "postal_leading_zero" in high.flags
    assert "Bourg-en-Bresse" in high.commune
    low = decode_postal_text("1 000", 0.6, plist)
    assert low.value == "01000" and low.band == "review"
    assert "postal_leading_zero" in low.flags and "postal_low_conf" in low.flags


def test_decode_four_digits_without_valid_zero_code(plist: PostalList) -> None:
    assert "07501" not in plist
    d = decode_postal_text("7501", 0.99, plist)
    assert (d.value, d.band, d.valid, d.alternatives) == ("", "reject", False, ())
    assert d.flags == ("postal_invalid",)


@pytest.mark.parametrize("raw", ["750111", "123", "abc", "75011 75012"])
def test_decode_wrong_length(plist: PostalList, raw: str) -> None:
    d = decode_postal_text(raw, 0.99, plist)
    assert (d.value, d.band, d.valid, d.alternatives, d.raw) == ("", "reject", False, (), raw)
    assert "postal_invalid" in d.flags


def test_decode_single_correction(plist: PostalList, tiny: PostalList) -> None:
    assert plist.neighbours("00080") == ["80080"]
    d = decode_postal_text("00080", 0.99, plist)
    assert d.value == "80080" and d.valid
    assert d.band == "review"  # never accepted, however confident the engine
    assert d.flags == ("postal_corrected",)
    assert d.alternatives == ("80080",)
    assert d.commune == plist.commune_label("80080") != ""
    assert d.confidence < 0.99
    t = decode_postal_text("12346", 1.0, tiny)
    assert (t.value, t.band, t.commune) == ("12345", "review", "Alpha, Béta")


def test_decode_several_candidates(plist: PostalList, tiny: PostalList) -> None:
    many = plist.neighbours("70090")
    assert len(many) > 5
    d = decode_postal_text("70090", 0.99, plist)
    assert (d.value, d.band, d.valid) == ("", "review", False)
    assert d.flags == ("postal_invalid",)
    assert len(d.alternatives) == 5 and set(d.alternatives) <= set(many)
    t = decode_postal_text("75013", 0.99, tiny)
    assert set(t.alternatives) == {"75011", "75012"} and t.value == ""


def test_decode_no_candidate(plist: PostalList) -> None:
    assert plist.neighbours("00001") == []
    d = decode_postal_text("00001", 0.99, plist)
    assert (d.value, d.band, d.valid, d.alternatives) == ("", "reject", False, ())
    assert d.flags == ("postal_invalid",)


def test_decode_clamps_confidence(plist: PostalList) -> None:
    assert decode_postal_text("75011", 1.7, plist).confidence == 1.0
    d = decode_postal_text("75011", math.nan, plist)
    assert d.confidence == 0.0 and d.band == "review"
    assert decode_postal_text("75011", -0.3, plist).confidence == 0.0


def test_to_field(plist: PostalList) -> None:
    d = decode_postal_text("70090", 0.9, plist)
    f = d.to_field()
    assert isinstance(f, FieldReading)
    assert (f.value, f.raw, f.confidence, f.band, f.alternatives) == \
        (d.value, d.raw, d.confidence, d.band, d.alternatives)
    assert isinstance(d, PostalDecision)


_SEPARATORS = st.sampled_from(["", " ", "  ", ".", "-", "\u00a0"])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), conf=st.floats(0.0, 1.0))
def test_valid_code_with_inner_spaces_round_trips(plist: PostalList, data: st.DataObject, conf: float) -> None:
    code = data.draw(st.sampled_from(plist.codes))
    seps = data.draw(st.lists(_SEPARATORS, min_size=4, max_size=4))
    raw = code[0] + "".join(s + c for s, c in zip(seps, code[1:], strict=True))
    raw = data.draw(st.sampled_from(["", " "])) + raw + data.draw(st.sampled_from(["", " ", "\n"]))
    d = decode_postal_text(raw, conf, plist)
    assert d.value == code and d.valid and d.raw == raw
    assert d.band == ("accept" if conf >= 0.8 else "review")
    assert d.commune == plist.commune_label(code)


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=12), conf=st.floats(allow_nan=True, allow_infinity=True))
def test_decode_invariants(plist: PostalList, raw: str, conf: float) -> None:
    d = decode_postal_text(raw, conf, plist)
    assert d.raw == raw
    assert 0.0 <= d.confidence <= 1.0
    assert d.band in ("accept", "review", "reject")
    assert all(f.startswith("postal_") for f in d.flags)
    assert d.valid == (d.value != "")
    if d.valid:
        assert d.value in plist and d.commune == plist.commune_label(d.value)
    else:
        assert d.band != "accept" and d.commune == ""
    if d.band == "accept":
        assert "postal_corrected" not in d.flags
    assert all(a in plist for a in d.alternatives) and len(d.alternatives) <= 5


# --- the handwritten reader: lexicon decoding, bands, a generated cell ------------------------------

from scan_pipeline.core.config import load_config  # noqa: E402
from scan_pipeline.read.postal import DigitEvidence, decide, decode_log_proba, read_postal  # noqa: E402


def _chain_logp(text: str, strong: float = 0.9) -> tuple[list[tuple[int, int]], np.ndarray]:
    """One atom per written digit, each segment a single atom, the written digit likeliest."""
    segments = [(i, i + 1) for i in range(len(text))]
    p = np.full((len(text), 11), (1 - strong) / 10)
    for i, ch in enumerate(text):
        p[i, int(ch)] = strong
    return segments, np.log(p)


def test_decode_exact_code(plist: PostalList) -> None:
    segments, logp = _chain_logp("75011")
    ev = decode_log_proba(segments, 5, logp, plist)
    assert ev is not None
    assert (ev.best, ev.raw, ev.distance, ev.leading_zero) == ("75011", "75011", 0, False)
    assert len(ev.alternatives) == 5 and "75011" not in ev.alternatives
    assert ev.score > 1  # 75011 has many neighbours one digit away (75001, 75010, 75012...)


def test_decode_four_digits_as_leading_zero(plist: PostalList) -> None:
    segments, logp = _chain_logp("1000")
    ev = decode_log_proba(segments, 4, logp, plist)
    assert ev is not None and ev.best == "01000" and ev.leading_zero and ev.raw == "1000" and ev.distance == 0


def test_decode_skips_a_crossed_out_piece(plist: PostalList) -> None:
    segments, logp = _chain_logp("750311")
    logp[3] = np.log(np.r_[np.full(10, 0.02), 0.8])  # the '3' is "not a digit": crossed out
    ev = decode_log_proba(segments, 6, logp, plist)
    assert ev is not None and ev.best == "75011" and ev.raw == "75011"


def test_decode_merges_two_atoms_of_one_digit(plist: PostalList) -> None:
    # atoms: 7 | 5 | left half of 0 | right half of 0 | 1 | 1; the half pieces are "not a digit"
    segments = [(0, 1), (1, 2), (2, 3), (3, 4), (2, 4), (4, 5), (5, 6), (3, 5)]
    p = np.full((8, 11), 0.01)
    for s, d in enumerate([7, 5, 10, 10, 0, 1, 1, 10]):
        p[s, d] = 0.9
    ev = decode_log_proba(segments, 6, np.log(p), plist)
    assert ev is not None and ev.best == "75011"


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 6200), position=st.integers(0, 4), wrong=st.integers(0, 9))
def test_one_perturbed_digit_decodes_back(plist: PostalList, index: int, position: int, wrong: int) -> None:
    code = plist.codes[index]
    if str(wrong) == code[position]:
        wrong = (wrong + 1) % 10
    misread = code[:position] + str(wrong) + code[position + 1:]
    segments, logp = _chain_logp(code)
    # the wrong digit is the likeliest at that position, the true one is second
    p = np.full(11, 0.1 / 9)
    p[wrong], p[int(code[position])] = 0.6, 0.3
    logp[position] = np.log(p / p.sum())
    ev = decode_log_proba(segments, 5, logp, plist)
    assert ev is not None
    if misread in plist:  # then the misreading is a real code: nothing can tell them apart
        assert ev.best in (code, misread)
    else:
        assert ev.best == code and ev.raw == misread and ev.distance == 1


def _ev(distance: int, raw: str = "75012") -> DigitEvidence:
    return DigitEvidence("75011", raw, 10.0, ("75012", "75013"), False, distance)


def test_decide_bands(plist: PostalList) -> None:
    cfg = load_config().postal
    ok = decide(_ev(0, "75011"), 0.999, plist, cfg)
    assert (ok.value, ok.band, ok.valid, ok.flags) == ("75011", "accept", True, ())
    assert "Paris" in ok.commune and ok.raw == "75011"
    low = decide(_ev(0, "75011"), (cfg.accept_confidence + cfg.reject_confidence) / 2, plist, cfg)
    assert low.band == "review" and low.value == "75011" and "postal_low_conf" in low.flags
    assert low.alternatives == ("75012", "75013")
    gone = decide(_ev(0, "75011"), cfg.reject_confidence / 2, plist, cfg)
    assert gone.band == "reject" and gone.value == "" and "postal_unreadable" in gone.flags
    assert gone.raw == "75011" and gone.alternatives[0] == "75011"
    assert decide(None, 0.0, plist, cfg).flags == ("postal_unreadable",)


def test_decide_keeps_an_unlikely_dropped_zero_for_review(plist: PostalList) -> None:
    cfg = load_config().postal
    ev = DigitEvidence("01000", "1000", -1.0, ("10000", "10800"), True, 0)
    d = decide(ev, cfg.reject_confidence / 2, plist, cfg)  # ambiguous, not unreadable
    assert d.band == "review" and d.value == "01000" and d.alternatives == ("10000", "10800")
    assert "postal_leading_zero" in d.flags and "postal_unreadable" not in d.flags


def test_decide_never_accepts_a_far_correction(plist: PostalList) -> None:
    cfg = load_config().postal
    one = decide(_ev(1), 0.9999, plist, cfg)
    # accepted: no flag (the contract), the correction shows as value != raw
    assert one.band == "accept" and one.flags == () and one.raw == "75012" and one.value != one.raw
    one_weak = decide(_ev(1), (cfg.accept_confidence + cfg.accept_corrected_confidence) / 2, plist, cfg)
    assert one_weak.band == "review"
    far = decide(_ev(3, "12345"), 0.9999, plist, cfg)
    assert far.band == "review" and "postal_corrected" in far.flags and far.raw == "12345"
    far_weak = decide(_ev(3, "12345"), cfg.accept_confidence / 2, plist, cfg)
    assert far_weak.value == "" and not far_weak.valid and "postal_invalid" in far_weak.flags
    assert far_weak.alternatives[0] == "75011"


def test_config_thresholds_are_ordered() -> None:
    cfg = load_config().postal
    assert 0 < cfg.reject_confidence < cfg.accept_confidence <= cfg.accept_corrected_confidence < 1
    assert cfg.max_corrected_digits >= 0


def test_read_postal_empty_cell(plist: PostalList) -> None:
    cfg = load_config().postal
    d = read_postal(np.full((60, 200), 255, np.uint8), False, None, plist, cfg)
    assert d.band == "accept" and d.value == "" and d.flags == ()
    d = read_postal(np.full((60, 200), 255, np.uint8), True, None, plist, cfg)
    assert d.band == "reject" and "postal_unreadable" in d.flags


def test_read_postal_on_generated_cells(plist: PostalList) -> None:
    from scan_pipeline.synth.cells import make_cell

    cfg = load_config().postal
    rng = np.random.default_rng(12)
    cases = [("75011", "75011"), ("75011", "75 011"), ("01000", "1000"), ("13760", "13760"), ("69003", "69003"),
             ("33000", "33 000"), ("06100", "06100"), ("59800", "59800"), ("97400", "97400"), ("44000", "44000")]
    right = 0
    for code, written in cases:
        d = read_postal(make_cell(written, rng, "clean"), True, None, plist, cfg)
        assert d.raw and 0.0 <= d.confidence <= 1.0
        right += d.value == code
        if d.value == code and written == "1000":
            assert "postal_leading_zero" in d.flags
    assert right >= 9


def test_bench_traces_a_misread_code_to_the_digit_images_written(plist: PostalList) -> None:
    from scan_pipeline.synth import samples as synth
    from scan_pipeline.synth.cells import generated_cases, generated_cases_traced, misread_images

    cases, images = generated_cases_traced(12, 3)
    _, labels = synth._digits()
    for (_, _, written, _), used in zip(cases, images):
        assert [int(labels[i]) for i in used] == [int(ch) for ch in written.replace(" ", "")]
    # the same cells as without tracing: the calibration and the bench draw them alike
    assert all(np.array_equal(a[3], b[3]) for a, b in zip(cases, generated_cases(12, 3)))
    # by position, a space and a dropped leading zero taken into account
    assert misread_images("75011", "75 011", "75017", [1, 2, 3, 4, 5]) == [5]
    assert misread_images("01000", "1000", "07000", [6, 7, 8, 9]) == [6]
    assert misread_images("01000", "1000", "01000", [6, 7, 8, 9]) == []
    assert misread_images("75011", "75011", "", [1, 2, 3, 4, 5]) == []  # no code read: nothing to trace


def test_commune_written_instead_of_code(plist: PostalList) -> None:
    d = decode_postal_text("Bourg en Bresse", 0.9, plist)
    assert d.value == "01000" and d.band == "review" and "postal_from_commune" in d.flags
    paris = decode_postal_text("PARIS", 0.9, plist)
    assert paris.value == "" and paris.band == "review" and len(paris.alternatives) == 5
    assert decode_postal_text("Xyzzyville", 0.9, plist).band == "reject"


def _scores_code_by_code(codes: np.ndarray, n_nodes: int, segs, dlog: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """The decoder's dynamic programme run for every code on its own (what the prefix tree shares)."""
    from scan_pipeline.read.postal import _closure

    V = np.full((n_nodes, len(codes)), np.float32(-1e9), np.float32)
    V[0] = 0.0
    V = _closure(V, segs, skip)
    for k in range(codes.shape[1]):
        W = np.full_like(V, np.float32(-1e9))
        for s, i, j in segs:
            np.maximum(W[j], V[i] + dlog[s][codes[:, k]], out=W[j])
        V = _closure(W, segs, skip)
    return V[n_nodes - 1]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 9))
def test_prefix_tree_scores_every_code_as_alone(seed, n_atoms):
    """Sharing the work of common prefixes gives each code exactly the score it has on its own."""
    from scan_pipeline.core.postcodes import load_postal_list
    from scan_pipeline.read.postal import _lexicon_scores

    rng = np.random.default_rng(seed)
    plist = load_postal_list()
    segs = sorted(((s, i, j) for s, (i, j) in enumerate(
        (i, j) for i in range(n_atoms) for j in range(i + 1, min(n_atoms, i + 3) + 1))), key=lambda t: (t[2], t[1]))
    logp = np.log(rng.dirichlet(np.ones(11), len(segs))).astype(np.float32)
    dlog, skip = logp[:, :10], logp[:, 10] - np.float32(3.0)
    got = _lexicon_scores(plist._tree, n_atoms + 1, segs, dlog, skip)
    assert np.array_equal(got, _scores_code_by_code(plist._digits, n_atoms + 1, segs, dlog, skip))
    four = _lexicon_scores(plist._zero_tree, n_atoms + 1, segs, dlog, skip)
    assert np.array_equal(four, _scores_code_by_code(plist._digits[plist._zero, 1:], n_atoms + 1, segs, dlog, skip))
