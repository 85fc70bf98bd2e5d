"""Blanking erased signatures in a review workbook already sent out (the erasure's redactor)."""

from __future__ import annotations

import io
from pathlib import Path

from scan_pipeline.review.sheet import LISTS_SHEET, REVIEW_SHEET


def redact_workbook(path: Path, ids: set[str]) -> tuple[bytes, int]:
    """The workbook with every trace of the given signatures blanked, and how many lines were theirs.

    Their lines are emptied in place (cells, images, their dropdown options), not deleted, so what a
    volunteer already typed on the other lines, and every image's anchor, stay as they were; a
    line that showed one of them as its possible duplicate loses that name and image."""
    from openpyxl import load_workbook

    wb = load_workbook(path)  # not read-only: images are kept
    ws = wb[REVIEW_SHEET]
    header = [str(c.value or "").strip().lower() for c in ws[1]]
    at = {h: i for i, h in enumerate(header) if h}
    image_cols = {at[k] for k in ("duplicate image",) if k in at}
    lists = wb[LISTS_SHEET] if LISTS_SHEET in wb.sheetnames else None
    blanked = 0
    drop: set[tuple[int, int | None]] = set()  # (0-based row, column or None for the whole row)
    for row in ws.iter_rows(min_row=2):
        sid = str(row[at["signature_id"]].value or "").strip() if "signature_id" in at else ""
        shown = str(row[at["possible duplicate of"]].value or "") if "possible duplicate of" in at else ""
        r = row[0].row
        if sid in ids:
            for cell in row:
                cell.value = None
            if lists is not None:
                for cell in next(lists.iter_rows(min_row=r, max_row=r), ()):
                    cell.value = None
            drop.add((r - 1, None))
            blanked += 1
        elif any(i in shown for i in ids):
            row[at["possible duplicate of"]].value = None
            drop |= {(r - 1, c) for c in image_cols}
    ws._images = [im for im in ws._images if not ((im.anchor._from.row, None) in drop
                                                  or (im.anchor._from.row, im.anchor._from.col) in drop)]
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue(), blanked
