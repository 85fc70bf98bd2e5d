"""HEIC/HEIF photos (issue #23): found in folders, read upright, each image a page, a damaged one
reported alone; end to end through the real command on a generated sheet (invented people).

The tool reads HEIF with pi-heif (decode only); the files here are written with pillow-heif's x265
encoder (a dev dependency), at its fastest preset.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from scan_pipeline.core.errors import InputFileError
from scan_pipeline.page.load import count_pages, expand_inputs, iter_pages

from .conftest import SCRIPT, ledger_rows, load_truth

# how to store an upright image so that the EXIF orientation tag turns it back upright
STORED_TURNED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def heic_of(img: Image.Image, path: Path, orientation: int = 1, quality: int = 85, **kwargs) -> Path:
    """`img` saved as a HEIC photo; with `orientation` (6 or 8), its pixels stored turned and the EXIF
    orientation tag saying how to turn them back, as a phone held sideways saves them (libheif also
    writes the matching `irot` box)."""
    rgb = img.convert("RGB")
    if orientation != 1:
        rgb = rgb.transpose(STORED_TURNED[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    pillow_heif.encode(rgb.mode, rgb.size, rgb.tobytes(), path, quality=quality,
                       enc_params={"preset": "ultrafast"}, **kwargs)
    return path


def _banded(size=(64, 128)) -> Image.Image:
    """White, with a black band on the left: which way up it is read is plain."""
    img = Image.new("L", size, 255)
    img.paste(0, (0, 0, size[0] // 4, size[1]))
    return img


def _pages(path: Path):
    return list(iter_pages(expand_inputs([str(path)])[0][0]))


# --- reading, in this process -----------------------------------------------------------------

def test_heic_and_heif_files_are_found_in_folders_any_case(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.heic", "b.HEIC", "sub/c.Heif", "d.heif"):
        heic_of(_banded(), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a scan")
    files, problems = expand_inputs([str(tmp_path)])
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == ["a.heic", "b.HEIC", "d.heif", "sub/c.Heif"]
    assert problems == []


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_heic_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, orientation):
    path = heic_of(_banded(), tmp_path / "phone.heic", orientation, thumbnails=[32])  # with a thumbnail, as phones
    pages = _pages(path)
    with Image.open(path) as stored:  # Pillow has pi-heif's opener now: load.py registered it for this file
        pass
    assert stored.info["original_orientation"] == orientation  # the file holds it turned, and says so
    assert len(pages) == 1  # the thumbnail is no page
    pixels = pages[0].pixels
    assert pixels.shape == (128, 64) and pixels.ndim == 2  # upright (taller than wide), gray
    assert pixels[:, :12].mean() < 60 and pixels[:, 20:].mean() > 200  # the band is on the left again
    assert pages[0].encoded == b""  # not sent as its bytes: a remote worker gets its pixels


def test_every_image_of_a_heif_file_is_a_page_in_file_order(tmp_path):
    """As a multi-page TIFF: nothing in the file is left unread. The primary image (what a viewer
    shows) is the second here, and the pages still come in the file's order."""
    path = tmp_path / "burst.heic"
    shots = [Image.new("RGB", (64, 96), (255, 255, 255)), Image.new("RGB", (80, 48), (0, 0, 0)),
             Image.new("RGB", (64, 64), (128, 128, 128))]
    heif = pillow_heif.HeifFile()
    for shot in shots:
        heif.add_frombytes("RGB", shot.size, shot.tobytes())
    heif.save(path, quality=90, primary_index=1, enc_params={"preset": "ultrafast"})
    item = expand_inputs([str(path)])[0][0]
    pages, again = list(iter_pages(item)), list(iter_pages(item))
    with Image.open(path) as opened:
        assert opened.tell() == 1  # Pillow opens a HEIF file at its primary image
    assert count_pages(item) == 3
    assert [p.ref.page for p in pages] == [1, 2, 3]
    assert [p.pixels.shape for p in pages] == [(96, 64), (48, 80), (64, 64)]
    assert [round(float(p.pixels.mean()) / 64) for p in pages] == [4, 0, 2]  # each page its own pixels
    assert len({p.ref.page_sha256 for p in pages}) == 3
    assert [p.ref.page_sha256 for p in pages] == [p.ref.page_sha256 for p in again]


def test_a_heic_named_otherwise_is_read_by_its_content(tmp_path):
    path = heic_of(_banded(), tmp_path / "sent-by-mail.jpg")
    assert _pages(path)[0].pixels.shape == (128, 64)


def _cut_in_the_image_data(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _cut_in_its_boxes(data: bytes) -> bytes:
    return data[:300]  # the `ftyp` box, a part of `meta`


def _garbage_after_ftyp(data: bytes) -> bytes:
    return data[:32] + bytes(range(256)) * 4


@pytest.mark.parametrize("damage", [_cut_in_the_image_data, _cut_in_its_boxes, _garbage_after_ftyp],
                         ids=["cut-in-data", "cut-in-boxes", "garbage"])
def test_a_damaged_heic_is_reported_with_the_file_and_a_reason(tmp_path, damage):
    good = heic_of(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300), dtype=np.uint8)),
                   tmp_path / "good.heic")
    path = tmp_path / "bad.heic"
    path.write_bytes(damage(good.read_bytes()))
    with pytest.raises(InputFileError) as info:
        _pages(path)
    assert info.value.file == str(path) and info.value.page is None
    assert info.value.message.startswith("the image is damaged or truncated (")
    assert "\\x0a" not in info.value.message  # libheif's reason without its newline
    assert info.value.hint == "scan the sheet again"


def test_the_heif_reader_is_loaded_only_when_a_heif_file_is_met(tmp_path):
    png, heic = tmp_path / "a.png", heic_of(_banded(), tmp_path / "b.heic")
    _banded().save(png)
    code = ("import sys\n"
            "from scan_pipeline.page.load import expand_inputs, iter_pages\n"
            "def read(p):\n"
            "    return list(iter_pages(expand_inputs([p])[0][0]))\n"
            f"read({str(png)!r})\n"
            "assert 'pi_heif' not in sys.modules, 'imported for a PNG'\n"
            f"assert read({str(heic)!r})[0].pixels.shape == (128, 64)\n"
            "assert 'pi_heif' in sys.modules and 'pillow_heif' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_without_pi_heif_a_heic_is_a_missing_dependency(tmp_path, monkeypatch):
    """Exit 5 and how to install it, as for poppler: not a damaged file (the batch cannot go on)."""
    from scan_pipeline.core.errors import MissingDependencyError
    from scan_pipeline.page import load

    path = heic_of(_banded(), tmp_path / "b.heic")
    monkeypatch.setattr(load, "_heif_opener", False)
    monkeypatch.setitem(sys.modules, "pi_heif", None)  # `import pi_heif` fails
    with pytest.raises(MissingDependencyError) as info:
        _pages(path)
    assert "pi-heif" in info.value.message and "pip install pi-heif" in info.value.hint

# --- end to end, through the real command -----------------------------------------------------

@pytest.fixture(scope="module")
def heic_batch(scan_corpus, tmp_path_factory):
    """One folder read by one run: a generated sheet's page as its PNG, as a HEIC photo, as a HEIC photo
    taken sideways (pixels turned, EXIF orientation 6), and that photo cut short."""
    truth = load_truth(scan_corpus)
    entry = min((f for f in truth["files"] if f["format"] == "png"),  # the page with fewest rows: quickest
                key=lambda f: sum(r["written"] for p in f["pages"] for r in p["rows"]))
    batch = tmp_path_factory.mktemp("heic") / "batch"
    batch.mkdir()
    png = batch / "page.png"
    shutil.copyfile(scan_corpus / entry["file"], png)
    with Image.open(png) as img:
        heic = heic_of(img, batch / "page.heic")
        heic_of(img, batch / "sideways.heic", orientation=6)
    (batch / "cut.heic").write_bytes(_cut_in_the_image_data(heic.read_bytes()))
    ledger = batch.parent / "ledger.csv"
    result = subprocess.run([str(SCRIPT), "process", str(batch), "--ledger", str(ledger), "--quiet"],
                            capture_output=True, text=True, timeout=600)
    df = ledger_rows(ledger)
    rows = {name: sorted((int(r.page), int(r.row_number)) for r in df.itertuples() if Path(r.source_file).name == name)
            for name in ("page.png", "page.heic", "sideways.heic", "cut.heic")}
    return batch, result, rows


def test_a_heic_photo_gives_the_rows_of_the_same_page_as_png(heic_batch):
    _, _, rows = heic_batch
    assert len(rows["page.png"]) >= 5  # the sheet's rows were found at all
    assert rows["page.heic"] == rows["page.png"]  # as many rows, under the same printed numbers


def test_a_heic_photo_taken_sideways_gives_the_same_rows(heic_batch):
    batch, _, rows = heic_batch
    with Image.open(batch / "page.png") as png:
        upright = np.asarray(png.convert("L"), dtype=np.int16)
    page = _pages(batch / "sideways.heic")[0]
    with Image.open(batch / "sideways.heic") as stored:
        pass
    assert stored.info["original_orientation"] == 6  # the file holds the page turned, and says so
    assert page.pixels.shape == upright.shape  # read upright
    assert np.abs(page.pixels.astype(np.int16) - upright).mean() < 8  # the same page, lossy compression aside
    assert rows["sideways.heic"] == rows["page.png"]


def test_a_cut_heic_fails_alone_and_the_batch_goes_on(heic_batch):
    batch, result, rows = heic_batch
    assert result.returncode == 10, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1, result.stderr
    assert failed[0].startswith(f"failed: {batch / 'cut.heic'}: the image is damaged or truncated (")
    assert failed[0].endswith("(scan the sheet again)")
    assert rows["cut.heic"] == []
    assert rows["page.png"] and rows["page.heic"] and rows["sideways.heic"]  # the good files were processed
