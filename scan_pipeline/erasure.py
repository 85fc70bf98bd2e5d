"""Erasure everywhere the tool wrote: the ledger and its sidecars, and the files listed as its outputs.

`ledger.erase_rows` removes the rows, crops and details in one change (journal.py); this module
adds to that same change what becomes of each output (`L.outputs.jsonl`) that shows an erased
signature: a review workbook has those lines blanked in place (the volunteers' other lines kept);
a run report or a grid overlay, which show whole pages, is deleted. Each is said. A copy made
elsewhere (a workbook sent by e-mail, a re-scan of the same sheet, which is a new file) is out of
reach: the README says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .config import DedupConfig
from .journal import Change
from .ledger import EraseSummary, erase_rows, read_outputs, sidecar_paths
from .review import redact_workbook

log = logging.getLogger(__name__)


def erase(ledger: Path, *, ids: tuple[str, ...] = (), name: str | None = None, postal_code: str | None = None,
          dry_run: bool = False, dedup_config: DedupConfig | None = None, now: str | None = None,
          lock_timeout: float = 120.0) -> EraseSummary:
    """`ledger.erase_rows`, reaching the ledger's outputs too (see the module doc)."""
    ledger = Path(ledger)

    def outputs(change: Change, gone_ids: set[str], gone_pages: set[str]) -> list[tuple[str, str]]:
        return _stage_outputs(ledger, change, gone_ids, gone_pages)

    return erase_rows(ledger, ids=ids, name=name, postal_code=postal_code, dry_run=dry_run,
                      dedup_config=dedup_config, now=now, lock_timeout=lock_timeout, outputs=outputs)


def _stage_outputs(ledger: Path, change: Change, ids: set[str], pages: set[str]) -> list[tuple[str, str]]:
    said: list[tuple[str, str]] = []
    kept: list[dict[str, Any]] = []
    touched = False
    for record in read_outputs(ledger):
        hit = ids & set(record.get("ids", ())) or pages & set(record.get("pages", ()))
        if not hit:
            kept.append(record)
            continue
        touched = True
        path = Path(record["path"])
        if not path.exists():
            said.append((str(path), "not found (moved or deleted?): if a copy is elsewhere, delete it there"))
            continue
        if record.get("kind") == "review":
            try:
                data, lines = redact_workbook(path, ids)
            except Exception as exc:  # noqa: BLE001 - a workbook someone broke: it still holds the names
                log.debug("%s: cannot be opened", path, exc_info=True)
                change.delete(path)
                said.append((str(path), f"deleted (it could not be opened to blank the lines: {type(exc).__name__})"))
                continue
            change.write(path, data)
            kept.append({**record, "ids": sorted(set(record.get("ids", ())) - ids),
                         "pages": sorted(set(record.get("pages", ())) - pages)})
            said.append((str(path), f"{lines} line(s) blanked"))
        else:
            change.delete(path)
            said.append((str(path), f"deleted (this {record.get('kind', 'file')} showed the signature)"))
    if touched:
        text = "".join(_line(r) for r in kept)
        change.write(sidecar_paths(ledger).outputs, text.encode("utf-8", errors="backslashreplace"))
    return said


def _line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
