"""The benchmark's scoring functions (scripts/bench.py), on tiny hand-made truth and ledgers."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
_spec = importlib.util.spec_from_file_location("bench_script", _PATH)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_script"] = bench
_spec.loader.exec_module(bench)

CORPUS = Path("corpus")
ROW_H = 100


def _cells(i: int, dy: int = 0) -> dict[str, list[int]]:
    y0, y1 = 1000 + ROW_H * i + dy, 1000 + ROW_H * (i + 1) + dy
    return {"row_number": [200, y0, 300, y1], "name": [300, y0, 1300, y1],
            "postal_code": [1300, y0, 1600, y1], "signature": [1600, y0, 2200, y1]}


PEOPLE = [("DUVAL Benoît", "14740", "signed"), ("ROUSSEL Josée", "10320", "signed"),
          ("MARTIN Zoé", "75011", "struck")]


def _truth() -> dict:
    """Two files: a scan PNG with 3 written rows and 1 empty, a photo JPEG with 1 written row."""
    def row(n: int, written: bool, person: tuple[str, str, str] | None = None) -> dict:
        name, code, sig = person or ("", "", "empty")
        return {"row_number": n, "written": written, "name": name, "name_written": name,
                "postal_code": code, "postal_written": code, "signature": sig, "person_id": f"p{n}",
                "repeat": False, "cells": _cells(n)}

    scan_rows = [row(i + 1, True, p) for i, p in enumerate(PEOPLE)] + [row(4, False)]
    return {"generator": {"seed": 1, "sheets": 2}, "files": [
        {"file": "sheet-001-aaaaaa.png", "sheet": 1, "mode": "scan", "format": "png", "pages": [
            {"page": 1, "sheet_page": 1, "dpi": 300, "pixel_size": [2480, 3508], "rotation_deg": 0.0,
             "upside_down": False, "rows": scan_rows}]},
        {"file": "sub/sheet-002-bbbbbb.jpg", "sheet": 2, "mode": "photo", "format": "jpg", "pages": [
            {"page": 1, "sheet_page": 1, "dpi": 200, "pixel_size": [1300, 1740], "rotation_deg": 0.0,
             "upside_down": False, "rows": [row(1, True, ("PETIT Jean", "69001", "signed"))]}]},
    ]}


def _perfect(truth: dict) -> tuple[pd.DataFrame, dict]:
    """The ledger and details a perfect pipeline would write for `truth`."""
    rows, details = [], {}
    for f in truth["files"]:
        for p in f["pages"]:
            for r in p["rows"]:
                if not r["written"]:
                    continue
                sid = f"{f['file'][:10]}-{p['page']}-{r['row_number']:02d}"
                rows.append({"signature_id": sid, "source_file": str(CORPUS / f["file"]),
                             "page": str(p["page"]), "row_number": str(r["row_number"]), "name": r["name"],
                             "postal_code": r["postal_code"], "signature": r["signature"], "status": "ok",
                             "flags": ""})
                details[sid] = {"signature_id": sid, "cells": copy.deepcopy(r["cells"])}
    return pd.DataFrame(rows, dtype=str), details


def _m(result: dict, metric: str, group: str = "overall") -> float | None:
    return result["metrics"][group][metric]["value"]


def test_perfect_ledger_scores_one() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    result = bench.score(truth, ledger, details, CORPUS)
    for metric in ("rows_localised", "rows_numbered", "postal_exact", "name_exact", "signature_accuracy",
                   "empty_rows_right", "accepted_name_accuracy", "accepted_postal_accuracy"):
        assert _m(result, metric) == 1.0, metric
    assert _m(result, "name_cer") == 0.0
    assert _m(result, "name_flagged") == 0.0 and _m(result, "review_share") == 0.0
    assert _m(result, "pages_total") == 2 and _m(result, "pages_failed") == 0
    assert result["metrics"]["overall"]["rows_localised"]["n"] == 4
    assert result["metrics"]["scan"]["rows_localised"]["n"] == 3
    assert result["metrics"]["photo"]["empty_rows_right"]["value"] is None  # no empty row there
    assert _m(result, "ledger_rows_unmatched") == 0


def test_missing_row_lowers_localisation_and_counts_wrong() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger = ledger[ledger["row_number"] != "2"].reset_index(drop=True)
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "rows_localised") == pytest.approx(3 / 4)
    assert _m(result, "rows_localised", "scan") == pytest.approx(2 / 3)
    assert _m(result, "rows_localised", "photo") == 1.0
    assert _m(result, "postal_exact") == pytest.approx(3 / 4)
    assert _m(result, "name_cer") == pytest.approx(1 / 4)  # the missing row counts as CER 1


def test_page_without_any_row_is_failed() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger = ledger[~ledger["source_file"].str.contains("sheet-002")].reset_index(drop=True)
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "pages_failed") == 1 and _m(result, "pages_failed", "photo") == 1
    assert _m(result, "pages_failed", "scan") == 0


def test_wrong_postal_code_lowers_postal_exact() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger.loc[0, "postal_code"] = "14741"
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "postal_exact") == pytest.approx(3 / 4)
    assert _m(result, "accepted_postal_accuracy") == pytest.approx(3 / 4)  # wrong and not flagged
    assert _m(result, "rows_localised") == 1.0 and _m(result, "name_exact") == 1.0


def test_flagged_wrong_postal_is_not_an_accepted_error() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger.loc[0, "postal_code"] = ""
    ledger.loc[0, "flags"] = "postal_invalid;signature_missing"
    ledger.loc[0, "status"] = "review"
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "postal_flagged") == pytest.approx(1 / 4)
    assert _m(result, "name_flagged") == 0.0
    assert _m(result, "review_share") == pytest.approx(1 / 4)
    assert _m(result, "accepted_postal_accuracy") == 1.0
    assert result["metrics"]["overall"]["accepted_postal_accuracy"]["n"] == 3


def test_row_flag_flags_both_fields() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger.loc[1, "flags"] = "row_misnumbered"
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "name_flagged") == pytest.approx(1 / 4)
    assert _m(result, "postal_flagged") == pytest.approx(1 / 4)


def test_shifted_box_fails_iou_but_row_is_numbered() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    sid = ledger.loc[0, "signature_id"]
    details[sid]["cells"]["name"] = _cells(1, dy=ROW_H * 2 // 3)["name"]  # 2/3 of a row down: IoU 0.2
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "rows_localised") == pytest.approx(3 / 4)
    assert _m(result, "rows_numbered") == 1.0


def test_small_shift_passes_iou() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    sid = ledger.loc[0, "signature_id"]
    details[sid]["cells"]["name"] = _cells(1, dy=ROW_H // 5)["name"]  # IoU 0.8/1.2 = 0.67
    assert _m(bench.score(truth, ledger, details, CORPUS), "rows_localised") == 1.0


def test_missing_details_is_not_localised() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    del details[ledger.loc[2, "signature_id"]]
    assert _m(bench.score(truth, ledger, details, CORPUS), "rows_localised") == pytest.approx(3 / 4)


def test_pdf_boxes_are_scaled() -> None:
    truth = _truth()
    truth["files"][0].update(file="sheet-001-aaaaaa.pdf", format="pdf")
    truth["files"][0]["pages"][0]["dpi"] = bench.PIPELINE_DPI / 2
    ledger, details = _perfect(truth)
    # the pipeline renders the page at twice the scan's resolution: its boxes are twice the truth's
    for sid in ledger["signature_id"][:3]:
        details[sid]["cells"]["name"] = [v * 2 for v in details[sid]["cells"]["name"]]
    assert _m(bench.score(truth, ledger, details, CORPUS), "rows_localised") == 1.0
    # measured scales take precedence over the truth's dpi
    scales = {("sheet-001-aaaaaa.pdf", 1): (1.0, 1.0)}
    assert _m(bench.score(truth, ledger, details, CORPUS, scales), "rows_localised") == pytest.approx(1 / 4)


def test_photo_pdf_default_scale_uses_first_page_width() -> None:
    p = {"page": 1, "dpi": 200, "pixel_size": [1240, 1650]}
    p2 = {"page": 2, "dpi": 200, "pixel_size": [1100, 1460]}
    f = {"file": "x.pdf", "format": "pdf", "mode": "photo", "pages": [p, p2]}
    sx, sy = bench.default_scale(f, p)
    assert sx == pytest.approx(bench.PIPELINE_DPI / (1240 / (210 / 25.4))) and sy == sx
    assert bench.default_scale(f, p2) == (sx, sy)  # the whole PDF was saved at one resolution
    assert bench.default_scale({"file": "x.tif", "format": "tiff", "mode": "photo"}, p) == (1.0, 1.0)


def test_empty_row_in_ledger_is_wrong_and_unknown_rows_counted() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    extra = {"signature_id": "x-4", "source_file": str(CORPUS / "sheet-001-aaaaaa.png"), "page": "1",
             "row_number": "4", "name": "", "postal_code": "", "signature": "empty", "status": "review",
             "flags": "name_missing"}
    ghost = {**extra, "signature_id": "x-9", "row_number": "9"}
    ledger = pd.concat([ledger, pd.DataFrame([extra, ghost], dtype=str)], ignore_index=True)
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "empty_rows_right") == 0.0
    assert _m(result, "ledger_rows_unmatched") == 1 and _m(result, "ledger_rows") == 6
    assert _m(result, "rows_localised") == 1.0


def test_name_cer_one_letter_error() -> None:
    assert bench.name_cer("DUVAL Benoit", "DUVAL Benoît") == 0.0  # accents do not count
    assert bench.name_cer("Benoît   DUVAL", "DUVAL Benoît") == 0.0  # nor word order or spaces
    assert bench.name_cer("DUVAL Benoix", "DUVAL Benoît") == pytest.approx(1 / 12)
    assert bench.name_cer("", "DUVAL Benoît") == 1.0
    assert bench.name_cer("A completely different and much longer text", "DUVAL Benoît") == 1.0  # capped


def test_one_letter_error_in_ledger() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    ledger.loc[0, "name"] = "DUVAL Benoix"
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "name_cer") == pytest.approx((1 / 12) / 4)
    assert _m(result, "name_exact") == pytest.approx(3 / 4)


def test_relative_source_paths() -> None:
    known = ["sub/a.png"]
    assert bench.relative_source("corpus/sub/a.png", Path("corpus"), known) == "sub/a.png"
    assert bench.relative_source("/elsewhere/corpus/sub/a.png", Path("corpus"), known) == "sub/a.png"


def test_iou() -> None:
    assert bench.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert bench.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert bench.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0


def test_table_has_every_group_column() -> None:
    truth = _truth()
    ledger, details = _perfect(truth)
    result = bench.score(truth, ledger, details, CORPUS)
    bench.add_speed(result["metrics"], 30.0, 2)
    table = bench.format_table(result["metrics"])
    header = table.splitlines()[0].split()
    assert header == ["metric", "overall", "scan", "gray", "bilevel", "photo"]
    assert "1.000 (4)" in table and "4.00" in table  # pages/min


def test_rows_are_also_scored_by_how_their_name_was_written() -> None:
    truth = _truth()
    rows = truth["files"][0]["pages"][0]["rows"]
    for r in rows:
        if r["written"]:
            r["name_source"] = "real" if r["row_number"] == 1 else "font"
    ledger, details = _perfect(truth)
    first = (ledger["row_number"] == "1") & ledger["source_file"].str.contains("sheet-001")
    ledger.loc[first, "name"] = "DUVAL Benoit Jr"  # the real one, misread
    result = bench.score(truth, ledger, details, CORPUS)
    assert _m(result, "name_exact", "real names") == 0.0
    assert result["metrics"]["real names"]["name_exact"]["n"] == 1
    assert _m(result, "name_exact", "font names") == 1.0  # the photo's row has no source: font
    assert result["metrics"]["font names"]["name_exact"]["n"] == 3
    assert _m(result, "pages_total") == 2 and not result["metrics"]["real names"]["pages_total"]["value"]
    assert "real names" in bench.format_table(result["metrics"], [*bench.GROUPS, *bench.NAME_GROUPS])
    plain = bench.score(_truth(), *_perfect(_truth()), CORPUS)
    assert "real names" not in plain["metrics"]
