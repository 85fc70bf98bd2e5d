"""The bad-input corpus: every kind of file a batch must survive, generated (no committed binaries).

`make_corpus(folder, good)` writes the cases into `folder` and returns them with what `process`
must say about each. Run it alone to look at the files:

    python -m tests.bad_inputs OUT_DIR GOOD_SCAN.png
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BadCase:
    file: str  # name in the corpus folder
    reason: str  # a part of the message `process` must print for it
    page: int | None = None  # the page the failure names, when it is about a page


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _pdf_of(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("L").save(out, "PDF", resolution=150.0)
    return out.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height white pixels: a few kB on disk, billions of pixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _huge_page_pdf() -> bytes:
    """A one-page PDF whose page is 5 x 5 metres: rendering it at 200 dpi would take ~1.5 GB."""
    size = 5000 / 25.4 * 72
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size:.0f} {size:.0f}] >>".encode()]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _encrypted_pdf(pdf: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _other_form(width: int = 1240, height: int = 1754) -> np.ndarray:
    """A page with a ruled table of another form: six equal columns, no row numbers."""
    img = np.full((height, width), 255, np.uint8)
    cv2.putText(img, "INVENTAIRE DU MATERIEL", (150, 200), cv2.FONT_HERSHEY_SIMPLEX, 2.0, 0, 4)
    x0, x1, y0 = 100, width - 100, 400
    for i in range(21):
        cv2.line(img, (x0, y0 + i * 60), (x1, y0 + i * 60), 0, 3)
    for j in range(7):
        x = x0 + j * (x1 - x0) // 6
        cv2.line(img, (x, y0), (x, y0 + 20 * 60), 0, 3)
    return img


def _tiff_ifds(data: bytes) -> list[int]:
    """Offsets of a little-endian TIFF's image directories, one per page."""
    assert data[:2] == b"II"
    offset, out = struct.unpack_from("<I", data, 4)[0], []
    while offset:
        out.append(offset)
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * struct.unpack_from("<H", data, offset)[0])[0]
    return out


def _tiff_entry(data: bytes, ifd: int, tag: int) -> int:
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        if struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0] == tag:
            return ifd + 2 + 12 * i
    raise KeyError(tag)


def _tiff_values(data: bytes, ifd: int, tag: int) -> list[int]:
    """The SHORT or LONG values of a tag (StripOffsets, StripByteCounts), inline or at their offset."""
    entry = _tiff_entry(data, ifd, tag)
    kind, count = struct.unpack_from("<HI", data, entry + 2)
    fmt = "H" if kind == 3 else "I"
    inline = count * struct.calcsize(fmt) <= 4
    at = entry + 8 if inline else struct.unpack_from("<I", data, entry + 8)[0]
    return list(struct.unpack_from(f"<{count}{fmt}", data, at))


def tiff_of(pages: list[bytes], *, bomb: tuple[int, ...] = (), damaged: tuple[int, ...] = (),
            odd_tag: bool = False) -> bytes:
    """A multi-page TIFF of the given PNG pages; the pages numbered in `bomb` (1-based) claim 20,000 x
    20,000 pixels (a decompression bomb: nothing may decode them), those in `damaged` have their
    compressed data overwritten; `odd_tag`: a tag whose data lies past the end (Pillow warns, per page)."""
    from PIL import TiffImagePlugin

    images = [Image.open(io.BytesIO(p)).convert("L") for p in pages]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    if odd_tag:
        info[65000] = "x" * 20
    out = io.BytesIO()
    images[0].save(out, "TIFF", save_all=True, append_images=images[1:], compression="tiff_lzw", tiffinfo=info,
                   dpi=(200, 200))
    data = bytearray(out.getvalue())
    ifds = _tiff_ifds(bytes(data))
    for n in bomb:
        for tag in (256, 257):  # width, height
            entry = _tiff_entry(bytes(data), ifds[n - 1], tag)
            kind = struct.unpack_from("<H", data, entry + 2)[0]
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, 20_000)
    for n in damaged:  # its compressed strips overwritten: the decoder fails on them
        for start, length in zip(_tiff_values(bytes(data), ifds[n - 1], 273), _tiff_values(bytes(data), ifds[n - 1],
                                                                                             279), strict=True):
            data[start:start + length] = b"\xff" * length
    if odd_tag:
        struct.pack_into("<I", data, _tiff_entry(bytes(data), ifds[0], 65000) + 4, 10**6)
    return bytes(data)


def pdf_after_a_huge_page(good_png: bytes) -> bytes:
    """A two-page PDF: a 5 x 5 m page, then a good scan."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for part in (_huge_page_pdf(), _pdf_of(good_png)):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_of(png: bytes) -> bytes:
    return _pdf_of(png)


def make_corpus(folder: Path, good: Path) -> list[BadCase]:
    """Write every bad case into `folder`; `good` is a readable scan (PNG) used to derive some."""
    folder.mkdir(parents=True, exist_ok=True)
    good_png = good.read_bytes()
    good_pdf = _pdf_of(good_png)
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(good_png)).convert("L").save(jpeg, "JPEG", quality=85)
    files: dict[str, tuple[bytes, BadCase]] = {
        "zero-bytes.pdf": (b"", BadCase("zero-bytes.pdf", "the file is empty")),
        "zero-bytes.png": (b"", BadCase("zero-bytes.png", "the file is empty")),
        "garbage.pdf": (b"%PDF-1.4\n" + bytes(range(256)) * 40, BadCase("garbage.pdf", "not a readable PDF")),
        "encrypted.pdf": (_encrypted_pdf(good_pdf), BadCase("encrypted.pdf", "the PDF is encrypted")),
        "truncated.pdf": (good_pdf[: len(good_pdf) // 3], BadCase("truncated.pdf", "PDF")),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3],
                          BadCase("truncated.jpg", "damaged or truncated")),
        "truncated.png": (good_png[: len(good_png) // 2], BadCase("truncated.png", "damaged or truncated")),
        "text-named.png": (b"NOM;PRENOM\nthis is not an image\n",
                           BadCase("text-named.png", "not an image this program can read")),
        "bomb.png": (_bomb_png(40_000, 40_000), BadCase("bomb.png", "too large")),
        "huge-page.pdf": (_huge_page_pdf(), BadCase("huge-page.pdf", "far too large", page=1)),
        "blank.png": (_png(np.full((1754, 1240), 255, np.uint8)),
                      BadCase("blank.png", "no signature grid was found", page=1)),
        "tiny.png": (_png(np.full((8, 8), 255, np.uint8)), BadCase("tiny.png", "too small", page=1)),
        "other-form.png": (_png(_other_form()), BadCase("other-form.png", "does not look like the template",
                                                        page=1)),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return [case for _, case in files.values()]


if __name__ == "__main__":
    for case in make_corpus(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"{case.file}: {case.reason}")
