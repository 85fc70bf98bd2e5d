"""Inputs to pages: expand folders, read PDFs (poppler), multi-page TIFFs, JPEGs (EXIF), PNGs and
HEIC/HEIF photos (pi-heif, whose opener Pillow is given the first time a HEIF file is met).

`page_sha256` is the SHA-256 of the file's bytes joined with the page index, so it changes when a
sheet is scanned again (new bytes) and not when the same file is processed again.

A file's pages are independent: a page that cannot be read is reported with its number and the
next page is read (`read_pages`). Paths are shown as `text.path_text` writes them, whatever bytes
the file name holds, and reach poppler only as absolute paths (never taken for an option).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scan_pipeline.core.errors import InputFileError, MissingDependencyError
from scan_pipeline.core.records import PageImage, PageRef
from scan_pipeline.core.text import path_text, printable

log = logging.getLogger(__name__)

HEIF_SUFFIXES = {".heic", ".heif"}  # what iPhones (and other phones) save their photos as
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"} | HEIF_SUFFIXES
SUFFIXES = IMAGE_SUFFIXES | {".pdf"}
PDF_DPI = 200  # what recognition needs: names and digits are ~70 px and ~45 px high at 200 dpi
MAX_PIXELS = 120_000_000  # a page larger than this is a decompression bomb, not a scan


@dataclass(frozen=True)
class InputFile:
    path: Path  # the path to open (its name may hold any bytes)
    given_as: str  # the path as the user gave it (or as found under a given folder), as `path_text` shows it


@dataclass(frozen=True)
class InputProblem:
    """An input that is not a file to read: missing, a broken link, a special file, an unreadable folder."""

    where: str  # as `path_text` shows it
    reason: str
    hint: str


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def _special_kind(mode: int) -> str:
    return next((kind for test, kind in _SPECIAL if test(mode)), "not a regular file")


def _classify(path: Path) -> tuple[str, os.stat_result | None, str]:
    """('file' | 'dir' | 'missing' | 'broken' | 'special' | 'error', its stat, a reason)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("broken" if os.path.islink(path) else "missing"), None, ""
    except OSError as exc:
        return "error", None, exc.strerror or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return "dir", st, ""
    if stat.S_ISREG(st.st_mode):
        return "file", st, ""
    return "special", st, _special_kind(st.st_mode)


def _problem(path: Path | str, kind: str, reason: str = "") -> InputProblem:
    where = path_text(os.fspath(path))
    if kind == "missing":
        return InputProblem(where, "no such file or folder", "check the path")
    if kind == "broken":
        return InputProblem(where, "a link to a file that does not exist (broken link)",
                            "point the link at the scan again, or remove it")
    if kind == "special":
        return InputProblem(where, f"not a regular file ({reason})",
                            "give the scans themselves (PDF, TIFF, JPEG, PNG, HEIC)")
    if kind == "unreadable":
        return InputProblem(where, f"cannot read the folder ({reason}): its files were not processed",
                            "check its permissions (ls -ld), then run the same command again")
    return InputProblem(where, f"cannot look at it ({reason})", "check the path and its permissions")


def _walk(root: Path, files: list[InputFile], problems: list[InputProblem]) -> None:
    """The scans under a folder, sorted; linked folders followed once (a loop of links ends), folders
    that cannot be read and known-suffix links or special files that are no scan reported."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        problems.append(_problem(exc.filename or root, "unreadable", exc.strerror or str(exc)))

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError as exc:
            unreadable(exc)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in SUFFIXES:
                continue  # other files are no scans: skipped silently
            kind, _, reason = _classify(path)
            if kind == "file":
                found.append(path)
            elif kind != "dir":
                problems.append(_problem(path, kind, reason))
    files.extend(InputFile(p, path_text(os.fspath(p))) for p in sorted(found))


def expand_inputs(inputs: list[str]) -> tuple[list[InputFile], list[InputProblem]]:
    """Files to read, in a stable order, and the inputs that are no file to read (each with a reason).

    A folder expands recursively to its files with a known suffix (any case), sorted by path;
    other files in it are skipped silently. A file named directly is kept whatever its suffix,
    so that a wrong file is reported rather than ignored.
    """
    files: list[InputFile] = []
    problems: list[InputProblem] = []
    for given in inputs:
        path = Path(given)
        kind, _, reason = _classify(path)
        if kind == "dir":
            _walk(path, files, problems)
        elif kind == "file":
            files.append(InputFile(path, path_text(given)))
        else:
            problems.append(_problem(given, kind, reason))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def page_hash(file_sha256: str, page_index: int) -> str:
    return hashlib.sha256(f"{file_sha256}:{page_index}".encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _arg(path: Path) -> str:
    """A path for a command line: absolute, so that a name like `-opw` is never read as an option."""
    return os.path.abspath(path)


def count_pages(item: InputFile) -> int:
    """How many pages a file holds, cheaply (for progress); 1 when it cannot tell (reading it will say why)."""
    try:
        if _is_pdf(item.path, _magic(item.path)):
            from pdf2image import pdfinfo_from_path

            return max(1, int(pdfinfo_from_path(_arg(item.path), timeout=30)["Pages"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading the file says what is wrong with it
            with _opened(item.path, item.given_as) as img:
                return max(1, int(getattr(img, "n_frames", 1)))
    except Exception:  # any failure here is reported, with its reason, when the file is read
        return 1


ENCODED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG: files a remote worker decodes itself
# the major brands of a HEIF file's `ftyp` box that pi-heif opens (its own list: HEVC images and sequences)
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(12)


def _is_heif(magic: bytes) -> bool:
    """By its first bytes (`_magic`): an ISO base media file (first box `ftyp`) of a HEIF brand."""
    return magic[4:8] == b"ftyp" and magic[8:12] in HEIF_BRANDS


def _is_pdf(path: Path, magic: bytes) -> bool:
    """By its first bytes (`_magic`), or its name (a damaged PDF is still reported as a PDF)."""
    return magic.startswith(b"%PDF") or path.suffix.lower() == ".pdf"


def _check_poppler() -> None:
    if not shutil.which("pdftoppm") or not shutil.which("pdfinfo"):
        raise MissingDependencyError("poppler (pdftoppm, pdfinfo) is not installed: PDFs cannot be read",
                                     hint="apt-get install poppler-utils (or run `make install`)")


def as_gray(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels


def _to_array(img: Image.Image) -> np.ndarray:
    """Pixels as uint8 gray, as the pipeline reads them (a third of the RGB bytes to send to a worker);
    transparency is paper, 16-bit scans are scaled down."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGB", img.size, (255, 255, 255))
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return as_gray(np.asarray(paper))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(img, dtype=np.float64)
        top = wide.max() or 1.0
        return (wide * (255.0 / (65535.0 if top > 255 else 255.0))).clip(0, 255).astype(np.uint8)
    if img.mode == "L":  # no converted copy: a 300-dpi page is 9 MB (gray) or 26 MB (RGB) to copy
        return np.asarray(img)
    if img.mode in ("1", "F"):
        return np.asarray(img.convert("L"))
    return as_gray(np.asarray(img if img.mode == "RGB" else img.convert("RGB")))


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the image itself (not a copy) when it is upright."""
    return ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) in range(2, 9) else img


def _dpi(img: Image.Image, default: float) -> float:
    dpi = img.info.get("dpi")
    try:
        value = float(dpi[0]) if dpi else default
    except (TypeError, ValueError, IndexError):
        value = default
    return value if 50 <= value <= 1200 else default


PageOrFailure = PageImage | InputFileError


@contextmanager
def _stderr_of_c_libraries() -> Iterator[list[str]]:
    """File descriptor 2 sent to a temporary file for the time of a call (C libraries write there
    directly); the lines it got, once the call is done."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                lines += sink.read(1 << 16).decode("utf-8", errors="replace").splitlines()
    finally:
        os.close(saved)


def read_pages(item: InputFile, pdf_dpi: int = PDF_DPI, keep_encoded: bool = False) -> Iterator[PageOrFailure]:
    """Every page of one file: a PageImage for each page read, an InputFileError (yielded, not raised)
    for each page that could not be, and the next pages are still read. Raises InputFileError when
    the file itself cannot be read. `keep_encoded`: a one-page JPEG or PNG, or a PDF page that is a
    JPEG scan, also keeps the JPEG or PNG bytes (`PageImage.encoded`)."""
    path, given = item.path, item.given_as
    try:
        # a JPEG or PNG kept as bytes is read once: hashed, decoded and sent from the same bytes
        magic = _magic(path)
        data = path.read_bytes() if keep_encoded and magic.startswith(ENCODED_MAGIC) else b""
        digest = hashlib.sha256(data).hexdigest() if data else file_sha256(path)
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(f"cannot read the file: {exc.strerror or exc}", file=given,
                             hint="check that the file exists and is readable") from exc
    if size == 0:
        raise InputFileError("the file is empty (0 bytes)", file=given, hint="scan the sheet again")
    warns = _Warnings(given)
    try:
        if _is_pdf(path, magic):
            yield from _pdf_pages(path, given, digest, pdf_dpi, keep_encoded, warns)
        else:
            yield from _image_pages(path, given, digest, data, warns)
    finally:
        warns.report()


def iter_pages(item: InputFile, pdf_dpi: int = PDF_DPI, keep_encoded: bool = False) -> Iterator[PageImage]:
    """`read_pages`, raising the first page's failure instead of yielding it."""
    for page in read_pages(item, pdf_dpi, keep_encoded):
        if isinstance(page, InputFileError):
            raise page
        yield page


class _Warnings:
    """Warnings of Pillow, and what libtiff, libjpeg and libheif print on the process's stderr, none
    of which names a file: caught around each call into them (never across a yield) and logged once
    against the file, at -v."""

    def __init__(self, given: str):
        self.given = given
        self.messages: list[str] = []

    @contextmanager
    def caught(self) -> Iterator[None]:
        found: list[warnings.WarningMessage] = []
        printed: list[str] = []
        try:
            with warnings.catch_warnings(record=True) as found, _stderr_of_c_libraries() as printed:
                warnings.simplefilter("always")
                yield
        finally:  # a page that failed is the one whose warnings say most
            self.messages += [printable(str(w.message), keep_newlines=False) for w in found]
            self.messages += [printable(line, keep_newlines=False) for line in printed if line.strip()]

    def report(self) -> None:
        if self.messages:
            distinct = list(dict.fromkeys(self.messages))
            log.debug("%s: %d warning(s) from the image reader: %s", self.given, len(self.messages),
                      "; ".join(distinct[:5]) + (" ..." if len(distinct) > 5 else ""))


def _pdf_pages(path: Path, given: str, digest: str, dpi: int, keep_encoded: bool,
               warns: _Warnings) -> Iterator[PageOrFailure]:
    _check_poppler()
    from pdf2image import convert_from_path, pdfinfo_from_path
    from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

    try:
        info = pdfinfo_from_path(_arg(path))
        count = int(info["Pages"])
    except (PDFPageCountError, PDFSyntaxError, KeyError, ValueError) as exc:
        text = printable(str(exc).replace(_arg(path), given)).strip()
        reason = text.splitlines()[-1] if text else "unreadable"
        if "Incorrect password" in text or "encrypted" in text.lower():
            raise InputFileError("the PDF is encrypted", file=given,
                                 hint="save it again without a password, then process it") from exc
        raise InputFileError(f"not a readable PDF ({reason})", file=given,
                             hint="open it in a PDF viewer; if it does not open, scan the sheet again") from exc
    for index in range(count):
        ref = PageRef(given, index + 1, page_hash(digest, index))
        facts = _page_facts(path, index + 1)
        try:
            _check_pdf_page_size(facts, given, index + 1, dpi)
        except InputFileError as exc:
            yield exc
            continue
        with warns.caught():
            embedded = _embedded_page_image(path, index + 1, facts)
        if embedded is not None:
            yield PageImage(ref, _to_array(embedded[0]), embedded[1], embedded[2] if keep_encoded else b"")
            continue
        try:
            with warns.caught():
                images = convert_from_path(_arg(path), dpi=dpi, first_page=index + 1, last_page=index + 1,
                                           grayscale=True, timeout=120)  # color adds nothing to read
        except Exception as exc:  # poppler's errors come as many types; the page is reported
            reason = printable(str(exc).replace(_arg(path), given), keep_newlines=False)
            yield InputFileError(f"poppler could not render the page: {reason}", file=given, page=index + 1,
                                 hint="open the PDF in a viewer; export this page as an image")
            continue
        if not images:
            yield InputFileError("poppler rendered nothing for this page", file=given, page=index + 1,
                                 hint="open the PDF in a viewer; export this page as an image")
            continue
        yield PageImage(ref, _to_array(images[0]), float(dpi))


_PAGE_LINE = re.compile(r"^Page\s+(\d+)\s+(size|rot):\s+(.*)$", re.M)


def _page_facts(path: Path, page: int) -> dict[str, str]:
    try:
        info = subprocess.run(["pdfinfo", "-f", str(page), "-l", str(page), _arg(path)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {key: value for _, key, value in _PAGE_LINE.findall(info.stdout)}


def _page_size_pt(facts: dict[str, str]) -> tuple[float, float] | None:
    """The page's width and height in points, from pdfinfo's `size` line."""
    try:
        width_pt, height_pt = (float(v) for v in re.findall(r"[\d.]+", facts["size"])[:2])
    except (KeyError, ValueError):
        return None
    return width_pt, height_pt


def _check_pdf_page_size(facts: dict[str, str], given: str, page: int, dpi: int) -> None:
    """A page so large that rendering it would exhaust memory is refused, not rendered."""
    size = _page_size_pt(facts)
    if size is None:
        return  # poppler will say what is wrong when it renders
    width_pt, height_pt = size
    if width_pt * height_pt * (dpi / 72.0) ** 2 > MAX_PIXELS:
        mm = f"{width_pt / 72 * 25.4:.0f} x {height_pt / 72 * 25.4:.0f} mm"
        raise InputFileError(f"the page is far too large to be a scanned sheet ({mm})", file=given, page=page,
                             hint="export the sheet at A4 size, or scan it again")


def _embedded_page_image(path: Path, page: int, facts: dict[str, str]) -> tuple[Image.Image, float, bytes] | None:
    """The page's only image, its resolution and, for a JPEG that `decode_image` reads to the same
    pixels, its bytes; when the page is nothing but that image (a scanner's PDF).

    Taking the scan out of the PDF is several times faster than rendering the page and keeps the
    scan's own pixels; any other page (vector text, several images, a rotated page, an image that
    does not fill the page) is rendered by poppler instead.
    """
    if not shutil.which("pdfimages"):
        return None
    try:
        listing = subprocess.run(["pdfimages", "-list", "-f", str(page), "-l", str(page), _arg(path)],
                                 capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split() for line in listing.stdout.splitlines()[2:] if line.strip()]
    if listing.returncode != 0 or len(rows) != 1 or rows[0][2] != "image" or facts.get("rot", "0").strip() != "0":
        return None
    size = _page_size_pt(facts)
    try:
        width, height, x_ppi, y_ppi = int(rows[0][3]), int(rows[0][4]), float(rows[0][12]), float(rows[0][13])
    except (ValueError, IndexError):
        return None
    if size is None:
        return None
    page_w, page_h = size
    if width * height > MAX_PIXELS:
        return None  # a bomb: rendering at PDF_DPI is bounded by _check_pdf_page_size
    # the image must fill the page, at one resolution in both directions
    if abs(x_ppi - y_ppi) > 0.02 * x_ppi or abs(width / height - page_w / page_h) > 0.01 * page_w / page_h:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            subprocess.run(["pdfimages", "-j", "-f", str(page), "-l", str(page), _arg(path), f"{folder}/p"],
                           capture_output=True, timeout=120, check=True)
            files = list(Path(folder).iterdir())
            if len(files) != 1:
                return None
            raw = files[0].read_bytes()
            img = _open_image(io.BytesIO(raw), path_text(os.fspath(path)))
            as_is = img.format == "JPEG" and img.getexif().get(0x0112, 1) == 1  # no turn to undo
            return img, width / (page_w / 72.0), raw if as_is else b""
        except (OSError, subprocess.SubprocessError, InputFileError):
            return None


_OPEN_LOCK = threading.Lock()
_heif_opener = False  # pi-heif's opener given to Pillow (`_register_heif`): once per process
# what reading an image's pixels raises for a damaged file; RuntimeError is libheif's "some other error"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, RuntimeError)


def _register_heif() -> None:
    """Pillow given pi-heif's opener the first time a HEIF file is met (with _OPEN_LOCK held), so that
    a batch without one never pays its import (~50 ms). libheif turns each image as its `irot` and
    `imir` boxes say and pi-heif then sets its EXIF orientation to 1: `_upright` turns nothing twice."""
    global _heif_opener
    if _heif_opener:
        return
    try:
        import pi_heif
    except ImportError as exc:
        raise MissingDependencyError("pi-heif is not installed: HEIC/HEIF photos cannot be read",
                                     hint="pip install pi-heif (or run `make install`)") from exc
    pi_heif.register_heif_opener()
    _heif_opener = True


def _head(source: Path | io.BytesIO) -> bytes:
    """The first bytes of a file or of bytes read (`_magic`), the bytes' position kept."""
    if isinstance(source, io.BytesIO):
        at = source.tell()
        head = source.read(12)
        source.seek(at)
        return head
    try:
        return _magic(source)
    except OSError:
        return b""  # opening it says why


def _heif_refusal(source: Path | io.BytesIO) -> str:
    """Why libheif cannot open a HEIF file that Pillow could not open: Pillow keeps no plugin's reason."""
    import pi_heif

    try:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        pi_heif.open_heif(source if isinstance(source, io.BytesIO) else os.fspath(source))  # headers only
    except Exception as exc:  # libheif's errors come as many types; this is only for the message
        return str(exc).strip() or type(exc).__name__
    return "Pillow could not open it"


def _too_large(given: str, page: int | None) -> InputFileError:
    return InputFileError(f"the image is too large (over {MAX_PIXELS // 1_000_000} million pixels)", file=given,
                          page=page, hint="scan at 300 dpi or less")


def _check_size(img: Image.Image, given: str, page: int | None) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise _too_large(given, page)


def _damaged(exc: BaseException, given: str, page: int | None) -> InputFileError:
    reason = printable(str(exc).strip(), keep_newlines=False)  # libheif ends its reasons with a newline
    if page is None:
        return InputFileError(f"the image is damaged or truncated ({reason})", file=given, hint="scan the sheet again")
    return InputFileError(f"the page is damaged ({reason})", file=given, page=page, hint="scan the sheet again")


def _opened(source: Path | io.BytesIO, given: str) -> Image.Image:
    """The image opened (headers read, nothing decoded), or InputFileError saying why not. Without
    Pillow's own size check, which refuses a whole multi-page TIFF for one huge page: each frame's
    size is checked before it is decoded (`_decode`). A HEIF file is known by its first bytes,
    whatever its name."""
    heif = _is_heif(_head(source))
    try:
        with _OPEN_LOCK:
            if heif:
                _register_heif()
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        if heif:  # a HEIF file whose boxes libheif cannot read: damaged, as a cut JPEG is
            raise _damaged(SyntaxError(_heif_refusal(source)), given, None) from None
        raise InputFileError("not an image this program can read", file=given,
                             hint="scan the sheet as PDF, TIFF, JPEG, PNG or HEIC") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _damaged(exc, given, None) from exc


def _decode(img: Image.Image, given: str, page: int | None) -> None:
    """Decode the current frame, its size checked first."""
    _check_size(img, given, page)
    try:
        if img.format == "JPEG":
            img.draft("L", img.size)  # decode straight to gray: color adds nothing to read
        img.load()
    except Image.DecompressionBombError:
        raise _too_large(given, page) from None
    except _DECODE_ERRORS as exc:
        raise _damaged(exc, given, page) from exc


def _open_image(source: Path | io.BytesIO, given: str) -> Image.Image:
    """The image, decoded (its first frame), or InputFileError saying why not."""
    img = _opened(source, given)
    _decode(img, given, None)
    return img


def decode_image(data: bytes, given: str = "(page sent)") -> np.ndarray:
    """The pixels of a one-page JPEG or PNG file's bytes, exactly as `iter_pages` reads that file: a
    worker of a remote cluster is sent the scanner's own bytes (`PageImage.encoded`) and decodes them."""
    return _to_array(_upright(_open_image(io.BytesIO(data), given)))


def _image_pages(path: Path, given: str, digest: str, data: bytes = b"",
                 warns: _Warnings | None = None) -> Iterator[PageOrFailure]:
    """The file's pages; `data`, when given, is the file's bytes, decoded from and kept for a one-page
    JPEG or PNG (`PageImage.encoded`). A page that cannot be decoded is reported and the next one read."""
    warns = warns or _Warnings(given)
    with warns.caught():
        img = _opened(io.BytesIO(data) if data else path, given)
        try:
            frames = max(1, int(getattr(img, "n_frames", 1)))  # a HEIF file's images: each a page
        except _DECODE_ERRORS as exc:  # a broken chain of pages
            img.close()
            raise _damaged(exc, given, None) from exc
    single = frames == 1
    with img:
        for index in range(frames):
            page = None if single else index + 1  # a one-page image's failure is the file's
            try:
                with warns.caught():
                    if img.tell() != index:  # a HEIF file opens at its primary image, not always its first
                        img.seek(index)
                    _decode(img, given, page)
                    frame = _upright(img) if index == 0 else img  # read before the next seek: no copy
                    pixels = _to_array(frame)
            except InputFileError as exc:
                if single:
                    raise
                yield exc
                continue
            except _DECODE_ERRORS as exc:
                if single:
                    raise _damaged(exc, given, None) from exc
                yield _damaged(exc, given, page)
                continue
            encoded = data if single and img.format in ("JPEG", "PNG") else b""
            yield PageImage(PageRef(given, index + 1, page_hash(digest, index)), pixels, _dpi(frame, 300.0),
                            encoded)
