"""Benchmark the review spreadsheet: export speed, and how often the right answer is on screen.

    python scripts/bench_review.py [--sheets 6] [--seed 2027] [--rows 1000] [--out bench-review.json]
    python scripts/bench_review.py --ledger build/bench/ledger.csv --corpus build/bench/corpus
    python scripts/bench_review.py --screenshot docs/review-sheet.png   # also render the sheet

1. A ledger of generated sheets: --ledger/--corpus reuse a processed corpus (e.g. the one
   `scripts/bench.py` leaves in build/bench), otherwise `scan-pipeline samples generate` (all four
   modes) and `scan-pipeline process` (real Tesseract) make one under --work.
2. One look per row: for every row to review (status review) matched to its truth row, is the
   true name among what the sheet shows (the reading and the other readings of the dropdown)? The
   true postal code? Both, with the signature state right? Names compare as scripts/bench.py does
   (case, accents and word order ignored).
3. Export speed: the rows to review are repeated under other page ids (their real crops copied)
   until there are --rows of them, then `export_review` writes the workbook, timed; the workbook is
   then opened by LibreOffice (`soffice --headless --convert-to ods`, timed) when it is installed.
4. --screenshot: the first lines of the sheet rendered by LibreOffice (PDF, then poppler's
   pdftoppm) to a PNG, cropped to the table.

Figures go to stdout and --out (JSON, with the command and versions). Exit code 0 whatever the
figures; non-zero only when the corpus cannot be made or a tool fails to run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from scan_pipeline.ledger.paths import sidecar_paths, signature_id
from scan_pipeline.ledger.sidecars import read_details
from scan_pipeline.ledger.store import read_ledger, write_ledger
from scan_pipeline.review.export import export_review
from scan_pipeline.review.sheet import COLUMNS, INSTRUCTIONS_SHEET, REVIEW_SHEET

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_script", REPO / "scripts" / "bench.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_script", bench)
_spec.loader.exec_module(bench)

# The sheet 'Review' is the second of the workbook; LibreOffice's CSV filter takes its number as the
# 12th token (since LibreOffice 7.2): separator 44 (,), quote 34 ("), charset 76 (UTF-8), from line 1.
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,2"


# --- LibreOffice (also used by tests/test_review_e2e.py) -------------------------------------------


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert(source: Path, target_format: str, outdir: Path, profile: Path, timeout: float = 300) -> Path:
    """`soffice --headless --convert-to` with its own profile folder (parallel runs would share one)."""
    exe = soffice()
    if exe is None:
        raise FileNotFoundError("soffice not found: apt-get install libreoffice-calc-nogui (make install does)")
    outdir.mkdir(parents=True, exist_ok=True)
    spec = CSV_FILTER if target_format == "csv" else target_format
    cmd = [exe, f"-env:UserInstallation={profile.resolve().as_uri()}", "--headless", "--convert-to", spec,
           "--outdir", str(outdir), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if target_format == "csv":  # a chosen sheet is written as NAME-SHEET.csv
        found = outdir / f"{source.stem}-{REVIEW_SHEET}.csv"
    else:
        found = outdir / f"{source.stem}.{target_format}"
    if done.returncode != 0 or not found.exists():
        raise RuntimeError(f"soffice failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return found


def render_png(xlsx: Path, png: Path, profile: Path, *, lines: int = 7, dpi: int = 150) -> Path:
    """The header and first lines of the sheet 'Review' as LibreOffice prints them, as a PNG."""
    from openpyxl import load_workbook
    from PIL import Image, ImageOps

    work = Path(tempfile.mkdtemp(prefix="review-render-"))
    try:
        wb = load_workbook(xlsx)
        wb[INSTRUCTIONS_SHEET].sheet_state = "hidden"  # hidden sheets are not printed
        ws = wb[REVIEW_SHEET]
        wb.active = wb.sheetnames.index(REVIEW_SHEET)
        ws.print_area = f"A1:{ws.cell(row=1, column=len(COLUMNS) - 1).column_letter}{lines + 1}"
        ws.page_setup.orientation = "landscape"
        ws.page_setup.paperSize = ws.PAPERSIZE_A3
        ws.sheet_properties.pageSetUpPr.fitToPage = True
        ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
        preview = work / "preview.xlsx"
        wb.save(preview)
        pdf = convert(preview, "pdf", work, work / "profile")
        subprocess.run(["pdftoppm", "-r", str(dpi), "-f", "1", "-l", "1", "-png", "-singlefile", str(pdf),
                        str(work / "page")], check=True, capture_output=True, timeout=120)
        page = Image.open(work / "page.png").convert("RGB")
        box = ImageOps.invert(page.convert("L")).point(lambda v: 255 if v > 8 else 0).getbbox()
        if box:
            pad = 12
            page = page.crop((max(0, box[0] - pad), max(0, box[1] - pad), min(page.width, box[2] + pad),
                              min(page.height, box[3] + pad)))
        png.parent.mkdir(parents=True, exist_ok=True)
        page.save(png, optimize=True)
        return png
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the measures -----------------------------------------------------------------------------------


def one_look(truth: dict[str, Any], ledger: pd.DataFrame, details: dict[str, dict[str, Any]],
             corpus: Path) -> dict[str, Any]:
    """Shares of rows to review whose right answer the sheet shows (reading or other readings)."""
    files = truth.get("files", [])
    known = [f["file"] for f in files]
    rows = {(f["file"], int(p["page"]), int(r["row_number"])): r for f in files for p in f["pages"]
            for r in p["rows"] if r.get("written")}
    n = name_shown = name_alt = postal_shown = postal_alt = both = unmatched = 0
    for rec in ledger[ledger["status"] == "review"].to_dict("records"):
        key = (bench.relative_source(rec["source_file"], corpus, known), int(rec["page"]), int(rec["row_number"]))
        true = rows.get(key)
        if true is None:
            unmatched += 1
            continue
        n += 1
        det = details.get(rec["signature_id"], {})
        want_name = bench.normalise_name(true["name"])
        names = [bench.normalise_name(x) for x in [rec["name"], *det.get("name_alternatives", [])]]
        codes = [rec["postal_code"], *det.get("postal_alternatives", [])]
        has_name, has_code = want_name in names, true["postal_code"] in codes
        name_shown += has_name
        name_alt += has_name and names[0] != want_name
        postal_shown += has_code
        postal_alt += has_code and codes[0] != true["postal_code"]
        both += has_name and has_code and rec["signature"] == true["signature"]

    def share(k: int) -> float | None:
        return round(k / n, 4) if n else None

    return {"rows_to_review": n, "rows_not_in_truth": unmatched,
            "name_shown": share(name_shown), "name_right_only_among_alternatives": share(name_alt),
            "postal_shown": share(postal_shown), "postal_right_only_among_alternatives": share(postal_alt),
            "row_one_look": share(both)}


def grow_ledger(ledger: Path, target: Path, rows: int) -> int:
    """A ledger of at least `rows` rows to review: the source's, repeated under other page ids.

    Copies keep their readings, details and real crops (so the workbook weighs what a real one
    does); they are not deduplicated (the same names would otherwise all become duplicates).
    """
    df = read_ledger(ledger)
    flagged = df[df["status"] == "review"].reset_index(drop=True)
    if flagged.empty:
        raise SystemExit("the ledger has no row to review")
    details = read_details(sidecar_paths(ledger).details)
    src_crops, dst_crops = sidecar_paths(ledger).crops, sidecar_paths(target).crops
    frames, out_details = [], []
    copy = 0
    while sum(len(f) for f in frames) < rows:
        part = flagged.copy()
        new_sha = {s: hashlib.sha256(f"{s}-copy{copy}".encode()).hexdigest() for s in part["page_sha256"].unique()}
        for old, new in new_sha.items():
            if (src_crops / old[:16]).is_dir():
                shutil.copytree(src_crops / old[:16], dst_crops / new[:16], dirs_exist_ok=True)
        part["page_sha256"] = part["page_sha256"].map(new_sha)
        part["signature_id"] = [signature_id(s, int(r)) for s, r in zip(part["page_sha256"], part["row_number"])]
        part["source_file"] = f"copy{copy}/" + part["source_file"]
        part["flags"] = part["flags"].str.replace(";row_possible_duplicate", "").str.replace(
            "row_possible_duplicate", "")
        part.loc[part["flags"] == "", "flags"] = "name_low_conf"
        for old_id, new_id in zip(flagged["signature_id"], part["signature_id"]):
            obj = dict(details.get(old_id, {}))
            obj.update(signature_id=new_id, duplicate_candidates=[], crops={})
            out_details.append(obj)
        frames.append(part)
        copy += 1
    grown = pd.concat(frames, ignore_index=True).iloc[:rows].reset_index(drop=True)
    keep = set(grown["signature_id"])
    target.parent.mkdir(parents=True, exist_ok=True)
    write_ledger(grown, target)
    sidecar_paths(target).details.write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out_details if o["signature_id"] in keep),
        encoding="utf-8")
    return len(grown)


def make_corpus(work: Path, sheets: int, seed: int) -> tuple[Path, Path]:
    corpus, ledger = work / "corpus", work / "ledger.csv"
    script = Path(sys.executable).parent / "scan-pipeline"
    if not (corpus / "truth.json").exists() or not bench.corpus_matches(corpus, seed, sheets):
        shutil.rmtree(corpus, ignore_errors=True)
        subprocess.run([str(script), "samples", "generate", str(corpus), "--sheets", str(sheets), "--seed",
                        str(seed)], check=True, capture_output=True)
        bench.remove_ledger(ledger)
    if not ledger.exists():
        done = subprocess.run([str(script), "process", str(corpus), "--ledger", str(ledger), "--quiet"],
                              capture_output=True, text=True)
        if done.returncode not in (0, 10):
            raise SystemExit(f"scan-pipeline process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return corpus, ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sheets", type=int, default=6, help="sheets to generate (default 6)")
    ap.add_argument("--seed", type=int, default=2027, help="generator seed (default 2027)")
    ap.add_argument("--work", type=Path, default=Path("build/bench-review"), help="work folder")
    ap.add_argument("--ledger", type=Path, help="a processed ledger to use (with --corpus)")
    ap.add_argument("--corpus", type=Path, help="the generated corpus of --ledger (with its truth.json)")
    ap.add_argument("--rows", type=int, default=1000, help="rows to review in the timed export (default 1000)")
    ap.add_argument("--screenshot", type=Path, help="also render the sheet's first lines to this PNG")
    ap.add_argument("--out", type=Path, default=Path("bench-review.json"), help="results JSON")
    args = ap.parse_args(argv)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.ledger:
        if not args.corpus:
            ap.error("--ledger needs --corpus")
        corpus, ledger = args.corpus, args.ledger
    else:
        corpus, ledger = make_corpus(work, args.sheets, args.seed)

    truth = json.loads((corpus / "truth.json").read_text(encoding="utf-8"))
    df = read_ledger(ledger)
    details = read_details(sidecar_paths(ledger).details)
    look = one_look(truth, df, details, corpus)

    big = work / "export" / "ledger.csv"
    shutil.rmtree(big.parent, ignore_errors=True)
    grow_ledger(ledger, big, args.rows)
    xlsx = work / "export" / "review.xlsx"
    t0 = time.perf_counter()
    summary = export_review(big, xlsx, force=True)
    export_s = time.perf_counter() - t0
    speed = {"rows": summary.rows, "images": summary.images, "images_missing": summary.images_missing,
             "seconds": round(export_s, 2), "megabytes": round(xlsx.stat().st_size / 2**20, 1),
             "libreoffice_open_seconds": None}
    if soffice():
        t1 = time.perf_counter()
        ods = convert(xlsx, "ods", work / "export", work / "export" / "profile", timeout=1800)
        speed["libreoffice_open_seconds"] = round(time.perf_counter() - t1, 1)
        speed["libreoffice_ods_megabytes"] = round(ods.stat().st_size / 2**20, 1)
    if args.screenshot:
        small = work / "export" / "screenshot.xlsx"
        export_review(ledger, small, force=True)
        render_png(small, args.screenshot, work / "export" / "profile")

    result = {"one_look": look, "export": speed, "rows_grown_from": int((df["status"] == "review").sum()),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": datetime.now(UTC).isoformat(),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"rows to review matched to the truth: {look['rows_to_review']} (not in truth: {look['rows_not_in_truth']})")
    for key in ("name_shown", "name_right_only_among_alternatives", "postal_shown",
                "postal_right_only_among_alternatives", "row_one_look"):
        print(f"  {key.replace('_', ' '):42s} {look[key]}")
    print(f"export of {speed['rows']} rows to review ({speed['images']} images, {speed['megabytes']} MB): "
          f"{speed['seconds']} s; LibreOffice opens it (to .ods) in {speed['libreoffice_open_seconds']} s")
    print(f"wrote {args.out}" + (f" and {args.screenshot}" if args.screenshot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
