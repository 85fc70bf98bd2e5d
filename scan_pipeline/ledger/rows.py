"""From a page's result to ledger rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from scan_pipeline.core.records import PageResult
from scan_pipeline.core.text import ledger_path, ledger_text
from scan_pipeline.ledger.paths import signature_id
from scan_pipeline.ledger.schema import POSTAL_RE


def utc_timestamp(value: str | datetime | None = None) -> str:
    """ISO 8601 UTC with seconds and 'Z', the only form processed_at takes (so text order = time order)."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError("processed_at needs a time zone (e.g. a trailing Z for UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _confidence(value: float) -> str:
    value = float(value)
    if math.isnan(value):  # nothing trustworthy was read
        value = 0.0
    return f"{min(max(value, 0.0), 1.0):.3f}"


def rows_from_result(result: PageResult, processed_at: str) -> list[dict[str, str]]:
    """Ledger rows for the non-blank rows of one page, in page order."""
    stamp = utc_timestamp(processed_at)
    ref = result.ref
    out: list[dict[str, str]] = []
    for row in result.rows:
        if row.is_blank:
            continue
        flags = list(dict.fromkeys(row.flags))
        postal, postal_valid = row.postal.value, row.postal_valid
        if postal and not POSTAL_RE.fullmatch(postal):
            # The column only holds five digits; keep the reading in postal_code_ocr and ask a person.
            flags.append("postal_not_five_digits")
            postal, postal_valid = "", False
        out.append({
            "signature_id": signature_id(ref.page_sha256, row.row_number),
            "source_file": ledger_path(str(ref.source_file)),
            "page": str(ref.page),
            "row_number": str(row.row_number),
            "name": ledger_text(row.name.value),
            "name_ocr": ledger_text(row.name.raw),
            "name_confidence": _confidence(row.name.confidence),
            "postal_code": postal,
            "postal_code_ocr": ledger_text(row.postal.raw),
            "postal_confidence": _confidence(row.postal.confidence),
            "postal_valid": "true" if postal_valid else "false",
            "commune": ledger_text(row.commune),
            "signature": row.signature,
            "status": "review" if flags else "ok",
            "flags": ";".join(flags),
            "duplicate_of": "",
            "page_sha256": ref.page_sha256,
            "processed_at": stamp,
            "reviewed_by": "",
            "reviewed_at": "",
        })
    return out
