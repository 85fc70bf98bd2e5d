"""Accuracy and speed benchmark: generate a corpus, run the pipeline on it, score the ledger.

    python scripts/bench.py [--sheets 12] [--seed 2026] [--work build/bench] [--out bench-results.json]
                            [--keep]
    python scripts/bench.py --score-ledger LEDGER.csv --corpus CORPUS   # score an existing run only

Steps:
1. `scan-pipeline samples generate WORK/corpus --sheets N --seed S` (all modes and formats), unless
   --keep and WORK/corpus/truth.json already has that seed and sheet count.
2. `scan-pipeline process WORK/corpus --ledger WORK/ledger.csv` on a fresh ledger, timed by the wall
   clock (start-up included) -> pages/min. Then `tesseract PAGE - -l fra` on 3 pages (converted to PNG
   first, untimed; one OpenMP thread, as the pipeline uses): the ratio of pipeline seconds per page to
   tesseract seconds per page is a speed figure that does not depend much on the machine.
3. The ledger is scored against WORK/corpus/truth.json, overall and per mode (`score`, a pure
   function), printed as a table and written to --out with the command lines, versions and date.

The exit code is 0 whatever the figures (this is a measurement); it is non-zero only when the corpus
cannot be generated or the pipeline command fails to run (an exit code other than 0 or 10).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from scan_pipeline.core.text import fold

try:
    from rapidfuzz.distance import Levenshtein as _Levenshtein

    def levenshtein(a: str, b: str) -> int:
        return int(_Levenshtein.distance(a, b))
except ImportError:  # pragma: no cover - rapidfuzz is in the dev tools; keep the bench usable without it
    def levenshtein(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]


REPO = Path(__file__).resolve().parent.parent
MODES = ("scan", "gray", "bilevel", "photo")
GROUPS = ("overall", *MODES)
NAME_GROUPS = ("font names", "real names")  # rows by how their name was written (truth's name_source)
NAMES_DEV = REPO.parent / "shared" / "data" / "names-dev"  # real handwritten words; never copied into the repo
try:  # the pipeline renders PDF pages at this resolution
    from scan_pipeline.page.load import PDF_DPI as PIPELINE_DPI
except ImportError:  # scoring without the package installed
    PIPELINE_DPI = 200
A4_WIDTH_IN = 210 / 25.4  # photo-mode PDFs are saved at (image width / paper width) dpi
IOU_MIN = 0.5
OK_EXIT_CODES = (0, 10)  # 10: finished, but some pages failed (still a measurement)
TESSERACT_PAGES = 3
SIDECAR_SUFFIXES = (".crops", ".details.jsonl", ".lock", ".audit.jsonl", ".pages.jsonl")

# (key, label, kind): kind "share" (a value in [0, 1] over n items), "cer" (a mean over n rows),
# "count" (an integer), "seconds" / "rate" (overall only, filled in by main).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rows_localised", "rows localised (same number, name box IoU>=0.5)", "share"),
    ("rows_numbered", "rows in ledger under the right number", "share"),
    ("postal_exact", "postal code exact", "share"),
    ("name_exact", "name exact (normalised)", "share"),
    ("name_cer", "name CER (lower is better)", "cer"),
    ("signature_accuracy", "signature state right", "share"),
    ("empty_rows_right", "empty rows not in ledger", "share"),
    ("name_flagged", "name fields flagged", "share"),
    ("postal_flagged", "postal fields flagged", "share"),
    ("review_share", "rows with status review", "share"),
    ("accepted_name_accuracy", "accepted (unflagged) names right", "share"),
    ("accepted_postal_accuracy", "accepted (unflagged) postal codes right", "share"),
    ("ledger_rows", "ledger rows", "count"),
    ("ledger_rows_unmatched", "ledger rows matching no truth row", "count"),
    ("pages_total", "pages", "count"),
    ("pages_failed", "pages failed (written rows, no ledger row)", "count"),
    ("geometry_seconds", "geometry s/page (load to cells)", "seconds"),
    ("page_seconds", "page stage s/page (all but start-up)", "seconds"),
    ("pipeline_seconds", "pipeline seconds (wall clock)", "seconds"),
    ("pages_per_min", "pages/min", "rate"),
)


# --- scoring (pure) ----------------------------------------------------------------------------

def normalise_name(name: str) -> str:
    """Comparison form of a name: upper case, no accents, single spaces, words sorted."""
    return " ".join(sorted(fold(name).split()))


def name_cer(found: str, truth: str) -> float:
    """Character error rate of a found name against the true one, after `normalise_name`, capped at 1."""
    a, b = normalise_name(found), normalise_name(truth)
    if not b:
        return 0.0 if not a else 1.0
    return min(1.0, levenshtein(a, b) / len(b))


def iou(a: Iterable[float], b: Iterable[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def scale_box(box: Iterable[float], scale: tuple[float, float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = scale
    return [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


def default_scale(file_entry: dict[str, Any], page_entry: dict[str, Any]) -> tuple[float, float]:
    """Truth pixels -> pixels of the page as the pipeline loads it, from the truth alone.

    Image files are loaded as saved (scale 1). PDF pages are rendered at PIPELINE_DPI; the generator saved
    them at the page's dpi, or for photos at (width of the file's first image / A4 width) dpi for every
    page of the file. `pdf_scales` measures the real page sizes instead and is preferred when the files
    are at hand.
    """
    if file_entry.get("format") != "pdf" and not str(file_entry.get("file", "")).lower().endswith(".pdf"):
        return (1.0, 1.0)
    if file_entry.get("mode") in ("photo", "hardphoto"):
        first = min(file_entry.get("pages") or [page_entry], key=lambda p: int(p.get("page", 1)))
        resolution = float(first["pixel_size"][0]) / A4_WIDTH_IN
    else:
        resolution = float(page_entry.get("dpi") or PIPELINE_DPI)
    s = PIPELINE_DPI / resolution
    return (s, s)


def relative_source(source_file: str, corpus: Path, known: Iterable[str]) -> str:
    """The ledger's source_file as a path relative to the corpus folder (as truth.json names files)."""
    path = Path(source_file)
    for base, p in ((corpus, path), (corpus.resolve(), path.resolve())):
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            pass
    posix = path.as_posix()
    for name in known:  # e.g. the ledger was made from another copy of the corpus
        if posix == name or posix.endswith("/" + name):
            return name
    return posix


def _flags(text: str) -> list[str]:
    return [f.strip() for f in str(text).split(";") if f.strip()]


def _to_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


class _Tally:
    """Sums and counts per group (overall and each mode)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], float] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, groups: Iterable[str], metric: str, value: float | bool) -> None:
        for g in groups:
            self.sums[g, metric] = self.sums.get((g, metric), 0.0) + float(value)
            self.counts[g, metric] = self.counts.get((g, metric), 0) + 1

    def count(self, groups: Iterable[str], metric: str, by: int = 1) -> None:
        for g in groups:
            self.sums[g, metric] = self.sums.get((g, metric), 0.0) + by
            self.counts[g, metric] = 0

    def result(self, groups: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for g in groups:
            out[g] = {}
            for key, _, kind in METRICS:
                if kind in ("seconds", "rate"):
                    continue
                n = self.counts.get((g, key))
                total = self.sums.get((g, key), 0.0)
                if kind == "count":
                    out[g][key] = {"value": int(total), "n": None}
                else:
                    out[g][key] = {"value": (total / n) if n else None, "n": n or 0}
        return out


def score(truth: dict[str, Any], ledger: pd.DataFrame, details: dict[str, dict[str, Any]], corpus: Path,
          scales: dict[tuple[str, int], tuple[float, float]] | None = None) -> dict[str, Any]:
    """Score a ledger (read with dtype=str) and its details (by signature_id) against the generator's truth.

    `corpus` is the folder the ledger's source_file paths start with; `scales` maps (file, page) to the
    factors from truth pixels to the pipeline's pixels (default: `default_scale`). Returns
    {"metrics": {group: {metric: {"value", "n"}}}, "extra": {...}} for groups overall, scan, gray,
    bilevel, photo (and any other mode in the truth). Missing rows count as wrong (CER 1).
    """
    scales = scales or {}
    files = truth.get("files", [])
    known = [f["file"] for f in files]
    mode_of = {f["file"]: f.get("mode", "?") for f in files}
    groups = list(GROUPS) + sorted({m for m in mode_of.values() if m not in GROUPS})
    sources = {r.get("name_source") for f in files for p in f["pages"] for r in p["rows"] if r.get("written")}
    if "real" in sources:  # the corpus mixes real handwritten names with font-written ones: both columns
        groups += list(NAME_GROUPS)

    index: dict[tuple[str, int, int], dict[str, str]] = {}
    rows_on_page: dict[tuple[str, int], int] = {}
    duplicates = 0
    tally = _Tally()
    for rec in ledger.to_dict("records"):
        rel = relative_source(rec.get("source_file", ""), corpus, known)
        page, row = _to_int(rec.get("page", "")), _to_int(rec.get("row_number", ""))
        where = ["overall"] + ([mode_of[rel]] if rel in mode_of else [])
        tally.count(where, "ledger_rows")
        if page is None or row is None:
            continue
        rows_on_page[rel, page] = rows_on_page.get((rel, page), 0) + 1
        if (rel, page, row) in index:
            duplicates += 1
        else:
            index[rel, page, row] = rec

    matched: set[tuple[str, int, int]] = set()
    for f in files:
        file_where = ("overall", f.get("mode", "?"))
        for p in f["pages"]:
            page = int(p["page"])
            scale = scales.get((f["file"], page)) or default_scale(f, p)
            tally.count(file_where, "pages_total")
            if any(r.get("written") for r in p["rows"]) and not rows_on_page.get((f["file"], page)):
                tally.count(file_where, "pages_failed")
            for r in p["rows"]:
                key = (f["file"], page, int(r["row_number"]))
                led = index.get(key)
                if led is not None:
                    matched.add(key)
                if not r.get("written"):
                    tally.add(file_where, "empty_rows_right", led is None)
                    continue
                where = (*file_where, f"{r.get('name_source', 'font')} names")
                tally.add(where, "rows_numbered", led is not None)
                localised = False
                if led is not None:
                    box = (details.get(led.get("signature_id", "")) or {}).get("cells", {}).get("name")
                    true_box = r.get("cells", {}).get("name")
                    if box and true_box:
                        localised = iou(box, scale_box(true_box, scale)) >= IOU_MIN
                tally.add(where, "rows_localised", localised)
                found_name = led.get("name", "") if led is not None else ""
                name_ok = led is not None and normalise_name(found_name) == normalise_name(r["name"])
                postal_ok = led is not None and led.get("postal_code", "").strip() == r["postal_code"]
                tally.add(where, "postal_exact", postal_ok)
                tally.add(where, "name_exact", name_ok)
                tally.add(where, "name_cer", name_cer(found_name, r["name"]) if led is not None else 1.0)
                sig_ok = led is not None and led.get("signature") == r["signature"]
                tally.add(where, "signature_accuracy", sig_ok)
                if led is None:
                    continue
                flags = _flags(led.get("flags", ""))
                name_flagged = any(fl.startswith(("name_", "row_")) for fl in flags)
                postal_flagged = any(fl.startswith(("postal_", "row_")) for fl in flags)
                tally.add(where, "name_flagged", name_flagged)
                tally.add(where, "postal_flagged", postal_flagged)
                tally.add(where, "review_share", led.get("status") == "review")
                if not name_flagged:
                    tally.add(where, "accepted_name_accuracy", name_ok)
                if not postal_flagged:
                    tally.add(where, "accepted_postal_accuracy", postal_ok)

    for key in index.keys() - matched:
        where = ["overall"] + ([mode_of[key[0]]] if key[0] in mode_of else [])
        tally.count(where, "ledger_rows_unmatched")
    unknown_files = sorted({k[0] for k in index} - set(mode_of))
    return {"metrics": tally.result(groups),
            "extra": {"duplicate_ledger_keys": duplicates, "ledger_files_not_in_truth": unknown_files}}


def format_value(kind: str, cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    value = cell["value"]
    if kind == "count":
        return str(int(value))
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "rate":
        return f"{value:.2f}"
    return f"{value:.3f} ({cell.get('n', 0)})"


def format_table(metrics: dict[str, dict[str, dict[str, Any]]], groups: Iterable[str] = GROUPS) -> str:
    """Plain-text table: one line per metric, one column per group; shares show their count in ()."""
    groups = list(groups)
    header = ["metric", *groups]
    lines = [header]
    for key, label, kind in METRICS:
        if all(key not in metrics.get(g, {}) for g in groups):
            continue
        lines.append([label, *(format_value(kind, metrics.get(g, {}).get(key)) for g in groups)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# --- files -------------------------------------------------------------------------------------

def read_ledger_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_details(path: Path) -> dict[str, dict[str, Any]]:
    details: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return details
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "signature_id" in obj:
            details[obj["signature_id"]] = obj  # the last line for an id wins
    return details


def details_path(ledger: Path) -> Path:
    return ledger.with_suffix(".details.jsonl")


_PDFINFO_SIZE = re.compile(r"^Page\s+(\d+)\s+size:\s+([\d.]+)\s+x\s+([\d.]+)\s+pts", re.MULTILINE)


def pdf_page_sizes(path: Path) -> dict[int, tuple[float, float]]:
    """Page sizes in points, from `pdfinfo -f 1 -l 9999`; {} when pdfinfo is missing or fails."""
    if not shutil.which("pdfinfo"):
        return {}
    try:
        proc = subprocess.run(["pdfinfo", "-f", "1", "-l", "9999", str(path)], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {int(m[1]): (float(m[2]), float(m[3])) for m in _PDFINFO_SIZE.finditer(proc.stdout)}


def pdf_scales(truth: dict[str, Any], corpus: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(file, page) -> truth-to-pipeline pixel factors for PDF pages, measured from the PDF page sizes."""
    scales = {}
    for f in truth.get("files", []):
        if not f["file"].lower().endswith(".pdf"):
            continue
        sizes = pdf_page_sizes(corpus / f["file"])
        for p in f["pages"]:
            size = sizes.get(int(p["page"]))
            if size:
                w, h = p["pixel_size"]
                scales[f["file"], int(p["page"])] = (size[0] / 72 * PIPELINE_DPI / w,
                                                     size[1] / 72 * PIPELINE_DPI / h)
    return scales


def score_files(corpus: Path, ledger: Path) -> dict[str, Any]:
    truth = json.loads((corpus / "truth.json").read_text(encoding="utf-8"))
    if ledger.exists():
        df = read_ledger_csv(ledger)
    else:  # the pipeline found nothing at all
        df = pd.DataFrame(columns=["signature_id", "source_file", "page", "row_number"])
    scales = pdf_scales(truth, corpus)
    scales.update(source_scales(truth, corpus, ledger.with_suffix(".pages.jsonl")))
    scored = score(truth, df, read_details(details_path(ledger)), corpus, scales)
    add_page_times(scored["metrics"], truth, corpus, ledger.with_suffix(".pages.jsonl"))
    return scored


def source_scales(truth: dict[str, Any], corpus: Path, records: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(file, page) -> truth-to-pipeline pixel factors from the size of each page as the pipeline loaded
    it (`source_size` in L.pages.jsonl): exact whether a PDF page was rendered or its scan taken out."""
    if not records.exists():
        return {}
    sizes = {(f["file"], int(p["page"])): p["pixel_size"] for f in truth["files"] for p in f["pages"]}
    names = {f["file"] for f in truth["files"]}
    scales = {}
    for line in records.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (relative_source(r.get("source_file", ""), corpus, names), int(r.get("page", 0)))
        if "source_size" in r and key in sizes:
            (w, h), (sw, sh) = sizes[key], r["source_size"]
            scales[key] = (sw / w, sh / h)
    return scales


def add_page_times(metrics: dict[str, Any], truth: dict[str, Any], corpus: Path, records: Path) -> None:
    """Mean seconds per page from the run's per-page records (L.pages.jsonl), overall and per mode."""
    if not records.exists():
        return
    modes = {f["file"]: f["mode"] for f in truth["files"]}
    times: dict[str, dict[str, list[float]]] = {}
    for line in records.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        mode = modes.get(relative_source(r.get("source_file", ""), corpus, modes), "unknown")
        geometry = r.get("load_seconds", 0.0) + r.get("geometry_seconds", 0.0)
        page = r.get("load_seconds", 0.0) + r.get("seconds", 0.0)
        for group in ("overall", mode):
            times.setdefault(group, {"geometry_seconds": [], "page_seconds": []})
            times[group]["geometry_seconds"].append(geometry)
            times[group]["page_seconds"].append(page)
    for group, values in times.items():
        for metric, xs in values.items():
            metrics.setdefault(group, {})[metric] = {"value": sum(xs) / len(xs), "n": len(xs)}


# --- running -----------------------------------------------------------------------------------

def cli_command() -> tuple[list[str], dict[str, str] | None]:
    """The scan-pipeline command: the console script next to this python, else `-m scan_pipeline.cli`."""
    script = Path(sys.executable).parent / "scan-pipeline"
    if script.exists():
        return [str(script)], None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "scan_pipeline.cli"], env


def corpus_matches(corpus: Path, seed: int, sheets: int, name_crops_sha256: str | None = None) -> bool:
    try:
        gen = json.loads((corpus / "truth.json").read_text(encoding="utf-8"))["generator"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (gen.get("seed") == seed and gen.get("sheets") == sheets
            and (gen.get("name_crops") or {}).get("csv_sha256") == name_crops_sha256)


def write_name_crops(names_dev: Path, out_csv: Path) -> Path | None:
    """The held-out part of names-dev (crops whose number is divisible by 5: never tuned on) as the CSV
    `samples generate --name-crops` reads, with absolute paths; None when names-dev is absent."""
    labels = names_dev / "labels.csv"
    if not labels.exists():
        return None
    import csv

    with labels.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["file"][6:11]) % 5 == 0]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        w.writerows([(str((names_dev / r["file"]).resolve()), r["label"]) for r in rows])
    return out_csv


def remove_ledger(ledger: Path) -> None:
    for path in [ledger, *(ledger.with_suffix(s) for s in SIDECAR_SUFFIXES)]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def tesseract_version() -> str | None:
    if not shutil.which("tesseract"):
        return None
    try:
        proc = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else None


def pick_pages(truth: dict[str, Any], count: int = TESSERACT_PAGES) -> list[tuple[str, int, str]]:
    """A few (file, page, mode) to time tesseract on, of different modes when the corpus has them."""
    chosen: list[tuple[str, int, str]] = []
    modes: set[str] = set()
    every = [(f["file"], int(p["page"]), f.get("mode", "?"))
             for f in truth.get("files", []) for p in f["pages"]]
    for item in every:
        if len(chosen) < count and item[2] not in modes:
            chosen.append(item)
            modes.add(item[2])
    for item in every:
        if len(chosen) < count and item not in chosen:
            chosen.append(item)
    return chosen


def page_png(source: Path, page: int, target: Path) -> Path:
    """One page of a scan as PNG, as the pipeline would see it (PDFs rendered at PIPELINE_DPI)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix.lower() == ".pdf":
        prefix = target.with_suffix("")
        subprocess.run(["pdftoppm", "-r", str(PIPELINE_DPI), "-f", str(page), "-l", str(page), "-singlefile",
                        "-png", str(source), str(prefix)], check=True, capture_output=True, timeout=300)
        return prefix.with_suffix(".png")
    from PIL import Image, ImageOps

    with Image.open(source) as img:
        img.seek(page - 1)
        frame = ImageOps.exif_transpose(img) if page == 1 else img.copy()
        frame.save(target, "PNG")
    return target


def time_tesseract(truth: dict[str, Any], corpus: Path, work: Path) -> dict[str, Any]:
    """Seconds of a plain `tesseract PAGE - -l fra` per page, on a few pages converted to PNG beforehand."""
    result: dict[str, Any] = {"pages": [], "seconds": None, "seconds_per_page": None, "command": None}
    if not shutil.which("tesseract"):
        result["error"] = "tesseract not found"
        return result
    pngs = []
    for file, page, mode in pick_pages(truth):
        try:
            pngs.append((page_png(corpus / file, page, work / "tesseract" / f"{Path(file).stem}-p{page}.png"),
                         file, page, mode))
        except Exception as exc:  # a page that cannot be converted is left out of the timing
            result.setdefault("skipped", []).append(f"{file}:{page}: {exc}")
    total = 0.0
    # one OpenMP thread, as the pipeline runs tesseract (engines.py): the ratio compares like with like
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    for png, file, page, mode in pngs:
        cmd = ["tesseract", str(png), "-", "-l", "fra"]
        result["command"] = ["OMP_THREAD_LIMIT=1", "tesseract", "PAGE.png", "-", "-l", "fra"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            result.setdefault("skipped", []).append(f"{file}:{page}: tesseract exit {proc.returncode}")
            continue
        total += seconds
        result["pages"].append({"file": file, "page": page, "mode": mode, "seconds": round(seconds, 3)})
    if result["pages"]:
        result["seconds"] = round(total, 3)
        result["seconds_per_page"] = total / len(result["pages"])
    return result


def run(cmd: list[str], env: dict[str, str] | None, log: Path) -> tuple[int, float]:
    """Run a command, its output to a log file: (exit code, wall-clock seconds); 127 if it cannot start."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("wb") as fh:
        try:
            code = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        except OSError as exc:
            fh.write(f"cannot run {cmd[0]}: {exc}\n".encode())
            code = 127
    return code, time.perf_counter() - start


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def add_speed(metrics: dict[str, Any], seconds: float | None, pages: int) -> None:
    overall = metrics["overall"]
    overall["pipeline_seconds"] = {"value": seconds, "n": None}
    overall["pages_per_min"] = {"value": pages / seconds * 60 if seconds and pages else None, "n": None}


def report(metrics: dict[str, Any], out: Path, payload: dict[str, Any], say: Callable[[str], None]) -> None:
    say(format_table(metrics, list(metrics)))  # the modes of the corpus, then the name groups
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    say(f"\nwrote {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sheets", type=int, default=12, help="sheets to generate (default 12)")
    ap.add_argument("--seed", type=int, default=2026, help="generator seed (default 2026)")
    ap.add_argument("--work", type=Path, default=Path("build/bench"),
                    help="work folder (default build/bench)")
    ap.add_argument("--out", type=Path, default=Path("bench-results.json"), help="results JSON")
    ap.add_argument("--keep", action="store_true",
                    help="reuse WORK/corpus if its truth.json has the same seed and sheet count")
    ap.add_argument("--names-dev", type=Path, default=NAMES_DEV,
                    help="real handwritten words (labels.csv): half the signers write their name with two "
                         "of its held-out crops (default ../shared/data/names-dev, skipped when absent)")
    ap.add_argument("--no-real-names", action="store_true", help="write every name with a font")
    ap.add_argument("--score-ledger", type=Path, metavar="LEDGER",
                    help="only score this existing ledger against --corpus (nothing is generated or run)")
    ap.add_argument("--corpus", type=Path,
                    help="with --score-ledger: the corpus folder the ledger was made from")
    args = ap.parse_args(argv)
    if args.score_ledger and not args.corpus:
        ap.error("--score-ledger needs --corpus")
    if args.sheets < 1:
        ap.error("--sheets must be at least 1")
    return args


def base_payload() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "python_executable": sys.executable,
            "tesseract": tesseract_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = print

    if args.score_ledger:
        truth = json.loads((args.corpus / "truth.json").read_text(encoding="utf-8"))
        scored = score_files(args.corpus, args.score_ledger)
        add_speed(scored["metrics"], None, sum(len(f["pages"]) for f in truth["files"]))
        payload = {**base_payload(), "corpus": {"dir": str(args.corpus), **truth.get("generator", {})},
                   "ledger": str(args.score_ledger), **scored}
        report(scored["metrics"], args.out, payload, say)
        return 0

    work: Path = args.work
    corpus, ledger = work / "corpus", work / "ledger.csv"
    cli, env = cli_command()
    commands: dict[str, Any] = {}

    crops_csv = None if args.no_real_names else write_name_crops(args.names_dev, work / "name-crops.csv")
    if crops_csv is None and not args.no_real_names:
        say(f"no real handwritten names ({args.names_dev} not found): every name is written with a font")
    crops_sha = hashlib.sha256(crops_csv.read_bytes()).hexdigest() if crops_csv else None
    reused = args.keep and corpus_matches(corpus, args.seed, args.sheets, crops_sha)
    if reused:
        say(f"reusing the corpus in {corpus} (seed {args.seed}, {args.sheets} sheets)")
    else:
        if corpus.exists():
            if (corpus / "truth.json").exists():
                shutil.rmtree(corpus)  # an earlier corpus of this bench
            elif any(corpus.iterdir()):
                say(f"error: {corpus} exists and is not a bench corpus (no truth.json); "
                    "choose another --work")
                return 2
        gen = [*cli, "samples", "generate", str(corpus),
               "--sheets", str(args.sheets), "--seed", str(args.seed)]
        if crops_csv:
            gen += ["--name-crops", str(crops_csv)]
        commands["generate"] = gen
        say(f"generating {args.sheets} sheets (seed {args.seed}): {' '.join(gen)}")
        code, seconds = run(gen, env, work / "generate.log")
        if code != 0 or not (corpus / "truth.json").exists():
            say(f"error: the corpus could not be generated (exit {code}):\n{_tail(work / 'generate.log')}")
            return code or 1
        say(f"  done in {seconds:.1f} s")
    truth = json.loads((corpus / "truth.json").read_text(encoding="utf-8"))
    pages = sum(len(f["pages"]) for f in truth["files"])

    remove_ledger(ledger)
    proc_cmd = [*cli, "process", str(corpus), "--ledger", str(ledger)]
    commands["process"] = proc_cmd
    say(f"processing {pages} pages: {' '.join(proc_cmd)}")
    code, seconds = run(proc_cmd, env, work / "process.log")
    if code not in OK_EXIT_CODES:
        say(f"error: the pipeline failed to run (exit {code}):\n{_tail(work / 'process.log')}")
        return code or 1
    say(f"  exit {code} in {seconds:.1f} s ({pages / seconds * 60:.2f} pages/min)")

    say("timing plain tesseract on a few pages")
    tess = time_tesseract(truth, corpus, work)
    commands["tesseract"] = tess.get("command")
    per_page = seconds / pages if pages else None
    ratio = per_page / tess["seconds_per_page"] if per_page and tess.get("seconds_per_page") else None

    scored = score_files(corpus, ledger)
    add_speed(scored["metrics"], seconds, pages)
    payload = {
        **base_payload(),
        "corpus": {"dir": str(corpus), "seed": args.seed, "sheets": args.sheets, "pages": pages,
                   "reused": reused,
                   "generator": truth.get("generator", {})},
        "commands": commands,
        "pipeline": {"exit_code": code, "seconds": round(seconds, 3), "pages": pages,
                     "seconds_per_page": per_page, "pages_per_min": pages / seconds * 60 if seconds else None,
                     "log": str(work / "process.log")},
        "tesseract_timing": tess,
        "speed_ratio_pipeline_to_tesseract": ratio,
        **scored,
    }
    report(scored["metrics"], args.out, payload, say)
    if ratio is not None:
        say(f"speed: {per_page:.2f} s/page for the pipeline, {tess['seconds_per_page']:.2f} s/page for plain "
            f"tesseract ({len(tess['pages'])} pages): ratio {ratio:.2f}")
    else:
        why = "; ".join(tess.get("skipped", [tess.get("error", "no page")]))
        say(f"speed: no tesseract timing ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
