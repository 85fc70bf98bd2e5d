"""The run report: one self-contained HTML file a coordinator opens in any browser, offline.

It holds the run's figures, every failed file or page with the reason and what to do, a
thumbnail of each page with the grid found drawn on it, the rows flagged for review, and a chart
of this run's signatures by département. Images are embedded (data: URIs); nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from scan_pipeline import __version__
from scan_pipeline.core.errors import MissingDependencyError, OutputError
from scan_pipeline.core.flags import flag_words
from scan_pipeline.ledger.outputs import output_record, record_outputs
from scan_pipeline.ledger.stats import departement_chart, ledger_stats
from scan_pipeline.ledger.store import atomic_write, read_ledger

if TYPE_CHECKING:
    from scan_pipeline.core.records import BatchReport

THUMB_HEIGHT = 360
MAX_FLAGGED_SHOWN = 2000

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left}
th{background:#f4f4f4}.figures td:first-child{color:#555}.figures td:last-child{font-weight:600}
.bad{color:#b00020}.ok{color:#1b7a1b}.pages{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #ddd;padding:4px;width:min-content}figure img{height:240px;display:block}
figcaption{font-size:.8em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:200px}
.failed{border-color:#b00020}.note{color:#666;font-size:.9em}.chart{max-width:100%;height:auto}
details{margin:.5em 0}summary{cursor:pointer;color:#3b6ea8}
"""


def thumbnail(png: bytes, height: int = THUMB_HEIGHT) -> bytes:
    """A small JPEG of a page overlay, so a report of hundreds of pages stays a few MB."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) if png else None
    if img is None:
        return b""
    scale = min(1.0, height / img.shape[0])
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return buf.tobytes() if ok else b""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _chart(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "<p class='note'>No signature was added by this run.</p>"
    stats = ledger_stats(rows)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "chart.png"
        try:
            departement_chart(stats, target)
        except MissingDependencyError:
            chart = ("<p class='note'>The chart needs matplotlib (<code>pip install 'scan-pipeline[chart]'</code>); "
                     "the counts are in the table below.</p>")
        else:
            chart = (f"<img class='chart' alt='unique signers by département' "
                     f"src='{_data_uri(target.read_bytes(), 'image/png')}'>")
    table = "".join(f"<tr><td>{_e(dep)}</td><td>{v['signatures']}</td><td>{v['unique_signers']}</td>"
                    f"<td>{v['duplicates']}</td></tr>"
                    for dep, v in sorted(stats["by_departement"].items(), key=lambda kv: -kv[1]["unique_signers"]))
    return (chart + f"<details><summary>the counts by département ({len(stats['by_departement'])})</summary>"
            "<table><tr><th>département</th><th>signatures</th><th>unique signers</th><th>duplicates</th>"
            f"</tr>{table}</table></details>")


def _figures(report: BatchReport) -> str:
    rate = f"{report.pages_per_minute:.1f}" if report.pages_per_minute else "–"
    items = [
        ("pages processed", report.pages_done), ("pages already in the ledger (skipped)", report.pages_skipped),
        ("pages failed", report.pages_failed), ("signature rows added", report.rows_added),
        ("rows flagged for review", report.flagged), ("duplicates marked", report.duplicates),
        ("sheets read twice (retakes)", len(report.retakes)),
        ("files", report.files), ("time", f"{report.seconds:.1f} s"), ("pages per minute", rate),
        ("workers", f"{report.workers} ({report.executor})"),
    ]
    return "<table class='figures'>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items) \
        + "</table>"


def _failures(report: BatchReport) -> str:
    if not report.failures:
        return "<p class='ok'>No file or page failed.</p>"
    rows = "".join(f"<tr><td>{_e(f.file)}</td><td>{'' if f.page is None else f.page}</td>"
                   f"<td class='bad'>{_e(f.reason)}</td><td>{_e(f.hint)}</td></tr>" for f in report.failures)
    return f"<table><tr><th>file</th><th>page</th><th>what went wrong</th><th>what to do</th></tr>{rows}</table>"


def _retakes(report: BatchReport) -> str:
    if not report.retakes:
        return "<p class='ok'>No page of this run is a sheet read before.</p>"
    rows = "".join(f"<tr><td>{_e(r.where)}</td><td>{_e(r.of_where)}</td><td>{r.rows_alike} of {r.rows_both}</td></tr>"
                   for r in report.retakes)
    return ("<p class='note'>Each of these pages holds the same signers at the same row numbers as a page "
            "already read (a photo taken again): its rows are duplicates of that page's, counted once. "
            "Rows only the new page shows are kept.</p><table><tr><th>page</th><th>the same sheet as</th>"
            f"<th>rows read alike</th></tr>{rows}</table>")


def _pages(report: BatchReport) -> str:
    if not report.pages:
        return "<p class='note'>No page was read in this run.</p>"
    figures = []
    for p in report.pages:
        img = f"<img alt='page' src='{_data_uri(p.overlay_png, 'image/jpeg')}'>" if p.overlay_png else ""
        caption = f"{Path(p.file).name} p{p.page}: " + (
            f"{p.rows} rows, {p.flagged} flagged" if p.status == "done" else f"failed: {p.reason}")
        figures.append(f"<figure class='{p.status}' title='{_e(p.file)}'>{img}"
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    return ("<p class='note'>Each page as straightened, with the grid found (blue), the cells (green) and the "
            "row numbers read (red/orange).</p><div class='pages'>" + "".join(figures) + "</div>")


def _flagged(rows: pd.DataFrame) -> str:
    flagged = rows[rows["flags"] != ""]
    if flagged.empty:
        return "<p class='ok'>No row of this run needs review.</p>"
    shown = flagged.head(MAX_FLAGGED_SHOWN)
    body = "".join(
        f"<tr><td><code>{_e(r.signature_id)}</code></td><td>{_e(Path(r.source_file).name)}</td><td>{_e(r.page)}</td>"
        f"<td>{_e(r.row_number)}</td><td>{_e(r.name)}</td><td>{_e(r.postal_code or r.postal_code_ocr)}</td>"
        f"<td>{_e(r.signature)}</td><td>{'<br>'.join(_e(w) for w in flag_words(r.flags))}</td></tr>"
        for r in shown.itertuples())
    more = (f"<p class='note'>{len(flagged) - len(shown)} more not shown: "
            "<code>scan-pipeline review export</code> lists them all.</p>") if len(flagged) > len(shown) else ""
    return ("<table><tr><th>signature id</th><th>file</th><th>page</th><th>row</th><th>name read</th>"
            f"<th>postal code read</th><th>signature</th><th>why</th></tr>{body}</table>{more}")


def render_report(report: BatchReport, ledger: Path) -> str:
    df = read_ledger(ledger)
    rows = df[df["page_sha256"].isin(set(report.page_hashes))]
    status = "interrupted" if report.interrupted else ("finished with failures" if report.failures else "finished")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scan-pipeline run report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><h1>scan-pipeline run report</h1>
<p>{_e(datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'))} · ledger <code>{_e(ledger)}</code> ·
scan-pipeline {_e(__version__)} · <span class="{'bad' if report.failures else 'ok'}">{_e(status)}</span></p>
<h2>Figures</h2>{_figures(report)}
<h2>Failed files and pages ({report.pages_failed})</h2>{_failures(report)}
<h2>Sheets read twice ({len(report.retakes)})</h2>{_retakes(report)}
<h2>Signatures by département (this run)</h2>{_chart(rows)}
<h2>Rows flagged for review ({int((rows['flags'] != '').sum())})</h2>{_flagged(rows)}
<h2>Pages ({len(report.pages)})</h2>{_pages(report)}
</body></html>
"""


def write_report(path: Path, report: BatchReport, ledger: Path) -> None:
    """Write the report, and list it among the ledger's outputs with the rows and pages it shows
    (names of flagged rows, page thumbnails), so an erasure reaches it."""
    text = render_report(report, ledger)
    try:
        if path.parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode("utf-8"), durable=False)
    except OSError as exc:
        raise OutputError(f"cannot write the report {path}: {exc.strerror or exc}",
                          hint="check that the folder is writable") from exc
    df = read_ledger(ledger)
    rows = df[df["page_sha256"].isin(set(report.page_hashes)) & (df["flags"] != "")].head(MAX_FLAGGED_SHOWN)
    record_outputs(ledger, [output_record("report", path, ids=rows["signature_id"].tolist(),
                                          pages=[p.page_sha256 for p in report.pages if p.overlay_png])])
