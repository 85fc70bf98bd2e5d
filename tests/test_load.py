from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scan_pipeline.core.errors import InputFileError
from scan_pipeline.page.load import PDF_DPI, expand_inputs, iter_pages


def _png(path, size=(60, 40), color=255):
    Image.new("L", size, color).save(path)
    return path


def test_folder_expands_recursively_in_stable_order_any_case(tmp_path):
    (tmp_path / "b").mkdir()
    _png(tmp_path / "b" / "z.PNG")
    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a scan")
    (tmp_path / "truth.json").write_text("{}")
    Image.new("RGB", (30, 20)).save(tmp_path / "c.JPEG")
    files, missing = expand_inputs([str(tmp_path)])
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == ["a.png", "b/z.PNG", "c.JPEG"]
    assert missing == []


def test_missing_inputs_are_reported_and_duplicates_dropped(tmp_path):
    p = _png(tmp_path / "a.png")
    files, missing = expand_inputs([str(p), str(tmp_path), str(tmp_path / "nope.pdf")])
    assert len(files) == 1 and files[0].given_as == str(p)
    assert [(m.where, m.reason) for m in missing] == [(str(tmp_path / "nope.pdf"), "no such file or folder")]


def test_multi_page_tiff_gives_every_page_with_distinct_stable_hashes(tmp_path):
    path = tmp_path / "two.tif"
    pages = [Image.new("L", (50, 70), 255), Image.new("L", (50, 70), 0)]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_lzw")
    files, _ = expand_inputs([str(path)])
    first = list(iter_pages(files[0]))
    again = list(iter_pages(files[0]))
    assert [p.ref.page for p in first] == [1, 2]
    assert first[0].ref.page_sha256 != first[1].ref.page_sha256
    assert [p.ref.page_sha256 for p in first] == [p.ref.page_sha256 for p in again]
    assert first[0].pixels.mean() == 255 and first[1].pixels.mean() == 0  # page 1 kept its own pixels


def test_rescan_is_a_new_page(tmp_path):
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", color=250)
    fa, _ = expand_inputs([str(a)])
    fb, _ = expand_inputs([str(b)])
    assert next(iter_pages(fa[0])).ref.page_sha256 != next(iter_pages(fb[0])).ref.page_sha256


def test_jpeg_exif_orientation_is_honoured(tmp_path):
    img = Image.new("L", (40, 20), 255)
    img.paste(0, (0, 0, 10, 20))  # dark band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)
    page = next(iter_pages(expand_inputs([str(path)])[0][0]))
    assert page.pixels.shape[:2] == (40, 20)  # displayed upright: taller than wide
    assert page.pixels[:10].mean() < 100  # the band is now on top


def _truncated_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
    (_truncated_png(), "damaged or truncated"),
], ids=["zero-bytes", "text", "png-magic-only", "truncated"])
def test_bad_files_raise_with_the_file_and_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    files, _ = expand_inputs([str(path)])
    with pytest.raises(InputFileError) as info:
        list(iter_pages(files[0]))
    assert info.value.file == str(path)
    assert reason in info.value.message


def test_truncated_pdf_is_reported(tmp_path):
    path = tmp_path / "cut.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    with pytest.raises(InputFileError) as info:
        list(iter_pages(expand_inputs([str(path)])[0][0]))
    assert "PDF" in info.value.message


def test_a_scanners_pdf_gives_its_scans_at_their_own_resolution(scan_corpus):
    from .conftest import load_truth

    entry = next(f for f in load_truth(scan_corpus)["files"] if f["format"] == "pdf")
    pages = list(iter_pages(expand_inputs([str(scan_corpus / entry["file"])])[0][0]))
    assert [p.ref.page for p in pages] == [1, 2]
    for page, truth in zip(pages, entry["pages"]):
        assert [page.pixels.shape[1], page.pixels.shape[0]] == truth["pixel_size"]  # the scan's own pixels
        assert page.dpi == pytest.approx(truth["dpi"], rel=0.01)
        assert page.pixels.ndim == 2  # decoded straight to gray


def test_a_pdf_page_with_drawn_content_is_rendered_by_poppler(tmp_path):
    stream = b"20 w 100 100 m 400 700 l S"
    pdf = (b"%PDF-1.4\n1 0 obj <</Type/Catalog/Pages 2 0 R>> endobj\n"
           b"2 0 obj <</Type/Pages/Kids[3 0 R]/Count 1>> endobj\n"
           b"3 0 obj <</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R>> endobj\n"
           + b"4 0 obj <</Length " + str(len(stream)).encode() + b">> stream\n" + stream
           + b"\nendstream endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n")
    path = tmp_path / "drawn.pdf"
    path.write_bytes(pdf)
    page = next(iter_pages(expand_inputs([str(path)])[0][0]))
    assert page.dpi == PDF_DPI
    assert page.pixels.shape[0] == pytest.approx(297 / 25.4 * PDF_DPI, abs=2)
    assert page.pixels.min() < 50 and page.pixels.max() > 200  # the drawn line, on white


def test_transparent_png_is_paper_and_16_bit_tiff_is_scaled(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 5, 10))
    rgba.save(tmp_path / "t.png")
    page = next(iter_pages(expand_inputs([str(tmp_path / "t.png")])[0][0]))
    assert page.pixels[:, 10:].min() == 255 and page.pixels[:, :5].max() == 0
    deep = Image.fromarray(np.full((10, 20), 65535, np.uint16))
    deep.save(tmp_path / "d.tif")
    page = next(iter_pages(expand_inputs([str(tmp_path / "d.tif")])[0][0]))
    assert page.pixels.dtype == np.uint8 and page.pixels.min() == 255
