"""The ledger contract: columns, CSV form, appends, deduplication, locking and sidecars."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from scan_pipeline.core.errors import LedgerError, LedgerLockedError, OutputError, PipelineError
from scan_pipeline.core.records import EMPTY_FIELD, FieldReading, PageIssue, PageRef, PageResult, RowReading
from scan_pipeline.core.text import is_safe_text, path_bytes
from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.decisions import normalise_name
from scan_pipeline.ledger.dedup import deduplicate
from scan_pipeline.ledger.erase import erase_rows
from scan_pipeline.ledger.find import find_rows
from scan_pipeline.ledger.merge import merge_ledgers
from scan_pipeline.ledger.paths import sidecar_paths, signature_id
from scan_pipeline.ledger.rows import rows_from_result, utc_timestamp
from scan_pipeline.ledger.schema import (
    LEDGER_COLUMNS,
    SIGNATURE_ID_PATTERN,
    _fast_valid,
    _frame_rows,
    _id_follows_from_parts,
    _prescreen,
    load_schema,
    row_problems,
    validate_ledger_frame,
)
from scan_pipeline.ledger.sidecars import read_details
from scan_pipeline.ledger.stats import counts_as_signer
from scan_pipeline.ledger.store import ledger_lock, read_ledger, write_ledger

PNG = b"\x89PNG\r\n\x1a\n"  # any bytes will do: the ledger never decodes crops

EXPECTED_COLUMNS = (
    "signature_id", "source_file", "page", "row_number", "name", "name_ocr", "name_confidence",
    "postal_code", "postal_code_ocr", "postal_confidence", "postal_valid", "commune", "signature",
    "status", "flags", "duplicate_of", "page_sha256", "processed_at", "reviewed_by", "reviewed_at",
)
T0 = "2026-11-23T15:00:00Z"
T1 = "2026-11-23T16:00:00Z"
T2 = "2026-11-24T08:30:00Z"


def sha(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def field(value: str, confidence: float = 0.9, alternatives: tuple[str, ...] = ()) -> FieldReading:
    return FieldReading(value=value, raw=value, confidence=confidence, band="accept",
                        alternatives=alternatives)


def row(number: int, name: str = "Marie Dupont", postal: str = "01000", *, flags: tuple[str, ...] = (),
        signature: str = "signed", commune: str = "BOURG-EN-BRESSE", crops: bool = True) -> RowReading:
    return RowReading(
        row_number=number,
        name=field(name, 0.87, alternatives=(name.upper(),)) if name else EMPTY_FIELD,
        postal=field(postal, 0.95, alternatives=("01001",)) if postal else EMPTY_FIELD,
        postal_valid=bool(postal),
        commune=commune if postal else "",
        signature=signature,  # type: ignore[arg-type]
        flags=flags,
        crops_png=(("nom", PNG + f"name{number}".encode()), ("code_postal", PNG + f"cp{number}".encode()))
        if crops else (),
    )


def blank(number: int) -> RowReading:
    return RowReading(row_number=number, name=EMPTY_FIELD, postal=EMPTY_FIELD, postal_valid=False,
                      commune="", signature="empty")


def page(seed: str, rows: tuple[RowReading, ...], source: str = "scans/lot1.pdf",
         number: int = 1) -> PageResult:
    return PageResult(ref=PageRef(source_file=source, page=number, page_sha256=sha(seed)), rows=rows)


def ledger_dict(i: int, *, name: str = "Marie Dupont", postal: str = "01000", processed_at: str = T0,
                source: str = "a.pdf", page_no: int = 1, row_number: int | None = None,
                status: str = "ok", flags: str = "") -> dict[str, str]:
    """A valid ledger row built directly, for frame-level tests."""
    digest = sha(f"row-{i}")
    number = i + 1 if row_number is None else row_number
    return {
        "signature_id": signature_id(digest, number), "source_file": source, "page": str(page_no),
        "row_number": str(number), "name": name, "name_ocr": name, "name_confidence": "0.900",
        "postal_code": postal, "postal_code_ocr": postal, "postal_confidence": "0.950",
        "postal_valid": "true", "commune": "", "signature": "signed", "status": status, "flags": flags,
        "duplicate_of": "", "page_sha256": digest, "processed_at": processed_at, "reviewed_by": "",
        "reviewed_at": "",
    }


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS), dtype=str)


# --- the contract ---------------------------------------------------------------------------------


def test_columns_and_schema_agree() -> None:
    assert EXPECTED_COLUMNS == LEDGER_COLUMNS
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert tuple(schema["properties"]) == LEDGER_COLUMNS
    assert tuple(schema["required"]) == LEDGER_COLUMNS
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop["type"] == "string", name
        assert prop["title"] and prop["description"], name
    assert load_schema() is schema  # cached
    # the id's one pattern, as the code writes and reads it (review matches typed ids with it)
    assert schema["properties"]["signature_id"]["pattern"] == f"^{SIGNATURE_ID_PATTERN}$"
    assert re.fullmatch(SIGNATURE_ID_PATTERN, signature_id("f" * 64, 7))


@pytest.mark.parametrize(("column", "good", "bad"), [
    ("signature_id", "0123456789abcdef-07", "0123456789abcdef-7"),
    ("page", "12", "0"),
    ("row_number", "3", "03"),
    ("name_confidence", "1.000", "0.87"),
    ("postal_code", "", "1000"),
    ("postal_code", "01000", "2A004"),
    ("postal_valid", "false", "True"),
    ("signature", "struck", "crossed"),
    ("status", "corrected", "done"),
    ("flags", "name_low_confidence;row_overlap", "low_confidence"),
    ("flags", "", "name_x;"),
    ("page_sha256", sha("x"), sha("x").upper()),
    ("processed_at", "2026-11-23T15:00:00Z", "2026-11-23 15:00:00"),
    ("reviewed_at", "2026-11-24T09:30:00+01:00", "yesterday"),
])
def test_schema_patterns(column: str, good: str, bad: str) -> None:
    validator = Draft202012Validator(load_schema())
    base = ledger_dict(0)
    assert list(validator.iter_errors({**base, column: good})) == []
    assert list(validator.iter_errors({**base, column: bad})) != []
    assert list(validator.iter_errors({**base, "extra": ""})) != []
    assert list(validator.iter_errors({k: v for k, v in base.items() if k != column})) != []


def test_ids_and_sidecar_paths(tmp_path: Path) -> None:
    digest = sha("p")
    assert signature_id(digest, 7) == f"{digest[:16]}-07"
    assert signature_id(digest, 123) == f"{digest[:16]}-123"
    paths = sidecar_paths(tmp_path / "L.csv")
    assert paths.crops == tmp_path / "L.crops"
    assert paths.details == tmp_path / "L.details.jsonl"
    assert paths.lock == tmp_path / "L.lock"
    assert paths.audit == tmp_path / "L.audit.jsonl"


def test_missing_ledger_reads_as_empty_frame(tmp_path: Path) -> None:
    df = read_ledger(tmp_path / "none.csv")
    assert tuple(df.columns) == LEDGER_COLUMNS
    assert df.empty


def test_written_csv_has_no_bom_and_validates(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1), row(2, "Jean Martin", "75011"), blank(3)))],
                     processed_at=T0)
    raw = ledger.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" not in raw
    assert raw.split(b"\n", 1)[0].decode() == ",".join(EXPECTED_COLUMNS)
    df = read_ledger(ledger)
    assert validate_ledger_frame(df) == []
    validator = Draft202012Validator(load_schema())
    with ledger.open(newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            assert list(validator.iter_errors(record)) == []
    # Other tools read it with pandas, every column as text.
    other = pd.read_csv(ledger, dtype=str, keep_default_na=False)
    assert other.values.tolist() == df.values.tolist()


def test_rows_map_the_reading(tmp_path: Path) -> None:
    result = page("p1", (row(1, flags=("name_low_confidence",)), row(2, signature="struck"), blank(3)))
    rows = rows_from_result(result, T0)
    assert [r["row_number"] for r in rows] == ["1", "2"]  # blank rows are not signature rows
    first = rows[0]
    assert first["signature_id"] == f"{sha('p1')[:16]}-01"
    assert first["name_confidence"] == "0.870" and first["postal_confidence"] == "0.950"
    assert first["status"] == "review" and first["flags"] == "name_low_confidence"
    assert rows[1]["status"] == "ok" and rows[1]["signature"] == "struck"
    assert first["postal_valid"] == "true" and first["reviewed_by"] == first["reviewed_at"] == ""
    assert first["processed_at"] == T0 and first["page"] == "1" and first["source_file"] == "scans/lot1.pdf"


def test_bad_postal_value_is_kept_out_of_the_column() -> None:
    rows = rows_from_result(page("p1", (row(1, postal="0100"),)), T0)
    assert rows[0]["postal_code"] == "" and rows[0]["postal_code_ocr"] == "0100"
    assert rows[0]["postal_valid"] == "false" and rows[0]["status"] == "review"
    assert "postal_not_five_digits" in rows[0]["flags"].split(";")


def test_processed_at_is_normalised_to_utc() -> None:
    assert utc_timestamp("2026-11-23T16:00:00+01:00") == T0
    assert utc_timestamp("2026-11-23T15:00:00.750Z") == T0
    assert utc_timestamp(None).endswith("Z")
    with pytest.raises(ValueError):
        utc_timestamp("2026-11-23T15:00:00")  # no zone: ambiguous


def test_postal_code_stays_text(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1, postal="01000"),))], processed_at=T0)
    df = read_ledger(ledger)
    assert df.loc[0, "postal_code"] == "01000"
    assert df.loc[0, "page"] == "1"
    assert all(pd.api.types.is_string_dtype(t) for t in df.dtypes)


def test_same_page_twice_adds_no_rows(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    result = page("p1", (row(1), row(2, "Jean Martin", "75011")))
    first = append_results(ledger, [result], processed_at=T0)
    assert (first.rows_added, first.pages_added, first.pages_skipped, first.rows_total) == (2, 1, 0, 2)
    before = ledger.read_bytes()
    again = append_results(ledger, [result, result], processed_at=T1)
    assert (again.rows_added, again.pages_added, again.pages_skipped, again.rows_total) == (0, 0, 2, 2)
    assert ledger.read_bytes() == before
    twice_in_one_batch = append_results(tmp_path / "M.csv", [result, result], processed_at=T0)
    assert (twice_in_one_batch.rows_total, twice_in_one_batch.pages_skipped) == (2, 1)


def test_reprocess_replaces_the_page(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    first = page("p1", (row(1), row(2, "Jean Martin", "75011"), row(3, "Léa Roux", "13001")))
    append_results(ledger, [first, page("p2", (row(1, "Paul Petit", "69001"),))], processed_at=T0)
    old_crop = sidecar_paths(ledger).crops / sha("p1")[:16] / "03-nom.png"
    assert old_crop.exists()
    summary = append_results(ledger, [page("p1", (row(1, "Marie Dupond"), row(2, "Jean Martin", "75011")))],
                               processed_at=T1, reprocess=True)
    assert (summary.rows_added, summary.pages_skipped, summary.rows_total) == (2, 0, 3)
    df = read_ledger(ledger)
    p1 = df[df["page_sha256"] == sha("p1")]
    assert p1["name"].tolist() == ["Marie Dupond", "Jean Martin"]
    assert set(p1["processed_at"]) == {T1}
    assert df[df["page_sha256"] == sha("p2")]["processed_at"].tolist() == [T0]
    assert not old_crop.exists()  # no crops left for rows that are gone
    details = [json.loads(x) for x in sidecar_paths(ledger).details.read_text("utf-8").splitlines()]
    assert sorted(d["signature_id"] for d in details) == sorted(df["signature_id"])


def test_reprocess_of_a_failed_page_keeps_the_old_rows(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1),))], processed_at=T0)
    failed = PageResult(ref=page("p1", ()).ref, issues=(PageIssue("page_unreadable", "could not decode"),))
    summary = append_results(ledger, [failed], processed_at=T1, reprocess=True)
    assert (summary.rows_added, summary.rows_total) == (0, 1)
    assert read_ledger(ledger)["processed_at"].tolist() == [T0]


def test_details_sidecar_one_object_per_row(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1), row(2, "Jean Martin", "75011"), blank(3)))],
                     processed_at=T0)
    append_results(ledger, [page("p2", (row(5, "DUPONT Marie"),))], processed_at=T1)
    append_results(ledger, [page("p2", (row(5, "DUPONT Marie"),))], processed_at=T2, reprocess=True)
    lines = sidecar_paths(ledger).details.read_text("utf-8").splitlines()
    details = {d["signature_id"]: d for d in map(json.loads, lines)}
    assert len(details) == len(lines) == 3
    later = details[f"{sha('p2')[:16]}-05"]
    assert later["name_alternatives"] == ["DUPONT MARIE"] and later["postal_alternatives"] == ["01001"]
    assert later["duplicate_candidates"] == [f"{sha('p1')[:16]}-01"]
    assert later["crops"]["nom"] == f"L.crops/{sha('p2')[:16]}/05-nom.png"


def test_details_lines_are_kept_or_rewritten(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1, "Marie Dupont"), row(2, "Jean Martin", "75011")))], processed_at=T0)
    append_results(ledger, [page("p2", (row(3, "Paul Petit", "69001"),))], processed_at=T1)
    path = sidecar_paths(ledger).details
    before = dict(zip(read_details(path), path.read_text("utf-8").splitlines(), strict=True))
    append_results(ledger, [page("p3", (row(4, "DUPONT Marie"),))], processed_at=T2)  # Dupont signs again
    after = {json.loads(x)["signature_id"]: x for x in path.read_text("utf-8").splitlines()}
    dupont, martin, petit = signature_id(sha("p1"), 1), signature_id(sha("p1"), 2), signature_id(sha("p2"), 3)
    assert after[martin] == before[martin] and after[petit] == before[petit]  # unchanged: the same line
    assert json.loads(after[dupont])["duplicate_candidates"] == [signature_id(sha("p3"), 4)]
    assert all(line == json.dumps(json.loads(line), ensure_ascii=False) for line in after.values())


def test_details_hold_any_text(tmp_path: Path) -> None:
    # JSON leaves U+2028 and the like unescaped: the details file is cut at line feeds only
    ledger = tmp_path / "L.csv"
    odd = "Zoé\u2028Line\u2029\x1c\x85 Dupont"
    append_results(ledger, [page("p1", (row(1, odd),))], processed_at=T0)
    append_results(ledger, [page("p2", (row(2, "Jean Martin"),))], processed_at=T1)
    details = read_details(sidecar_paths(ledger).details)
    assert details[signature_id(sha("p1"), 1)]["name_alternatives"] == [odd.upper()]
    assert len(details) == 2


@pytest.mark.parametrize("line, problem", [
    ('{"signature_id": "a"} x', "line 2: not valid JSON (Extra data)"),
    ('{"signature_id": "a\\q"}', "line 2: not valid JSON (Invalid \\escape)"),
    ('{"signature_id": "a"', "line 2: not valid JSON"),
    ("null", "line 2: expected a JSON object with a signature_id"),
    ('["signature_id"]', "line 2: expected a JSON object with a signature_id"),
])
def test_a_bad_details_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "L.details.jsonl"
    path.write_text('{"signature_id": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(LedgerError) as info:
        read_details(path)
    assert problem in str(info.value)


def test_details_lines_may_carry_json_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "L.details.jsonl"
    path.write_text(' {"signature_id": "a"}\t\r\n\n{"signature_id": "b", "x": [1, {"y": null}]}  \n', encoding="utf-8")
    assert read_details(path) == {"a": {"signature_id": "a"}, "b": {"signature_id": "b", "x": [1, {"y": None}]}}


def test_crops_written_where_said(tmp_path: Path) -> None:
    ledger = tmp_path / "out" / "L.csv"
    result = page("p1", (row(3), blank(4), row(12, "Jean Martin", "75011")))
    append_results(ledger, [result], processed_at=T0)
    folder = tmp_path / "out" / "L.crops" / sha("p1")[:16]
    assert sorted(p.name for p in folder.iterdir()) == [
        "03-code_postal.png", "03-nom.png", "12-code_postal.png", "12-nom.png"]
    assert (folder / "03-nom.png").read_bytes() == PNG + b"name3"
    assert (folder / "12-code_postal.png").read_bytes() == PNG + b"cp12"
    details = read_details(sidecar_paths(ledger).details)
    folder = f"L.crops/{sha('p1')[:16]}"
    assert details[signature_id(sha("p1"), 12)]["crops"] == {"nom": f"{folder}/12-nom.png",
                                                               "code_postal": f"{folder}/12-code_postal.png"}


# --- deduplication --------------------------------------------------------------------------------


def test_normalised_names_match_regardless_of_order_case_and_accents() -> None:
    assert normalise_name("DUPONT Marie") == normalise_name("Marie Dupont") == "DUPONT MARIE"
    assert normalise_name("Hélène  d'Œillet-Ça") == "CA D HELENE OEILLET"
    assert normalise_name("--") == ""


def test_dedup_marks_the_later_one(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("p1", (row(1, "Marie Dupont"),))], processed_at=T0)
    later_page = page("p2", (row(4, "DUPONT Marie"), row(5, "Marie Dupont", "75011")))
    summary = append_results(ledger, [later_page], processed_at=T1)
    assert summary.duplicates_marked == 1
    df = read_ledger(ledger).set_index("signature_id")
    first, later = f"{sha('p1')[:16]}-01", f"{sha('p2')[:16]}-04"
    assert df.loc[first, "status"] == "ok" and df.loc[first, "duplicate_of"] == ""
    assert df.loc[later, "status"] == "duplicate" and df.loc[later, "duplicate_of"] == first
    assert df.loc[f"{sha('p2')[:16]}-05", "status"] == "ok"  # other postal code: another person


def test_dedup_tie_breaks_on_source_page_and_row_as_integers() -> None:
    rows = [ledger_dict(0, page_no=10, row_number=1), ledger_dict(1, page_no=9, row_number=20),
            ledger_dict(2, page_no=9, row_number=3)]
    out = deduplicate(frame(rows)).frame
    assert out["status"].tolist() == ["duplicate", "duplicate", "ok"]
    assert set(out["duplicate_of"][:2]) == {rows[2]["signature_id"]}


def test_dedup_recomputes_and_respects_people() -> None:
    rows = [ledger_dict(0, processed_at=T0), ledger_dict(1, processed_at=T1, flags="name_low_confidence",
                                                         status="review"),
            ledger_dict(2, processed_at=T2)]
    out = deduplicate(frame(rows)).frame
    ids = [r["signature_id"] for r in rows]
    assert out["duplicate_of"].tolist() == ["", ids[0], ids[0]]
    # A reviewer rejects the earliest: the group is recomputed around the next one.
    out.loc[0, "status"] = "rejected"
    again = deduplicate(out).frame
    assert again["status"].tolist() == ["rejected", "review", "duplicate"]  # back to review: it has flags
    assert again["duplicate_of"].tolist() == ["", "", ids[1]]
    # A corrected row is never changed, but can be the earliest.
    again.loc[1, "status"] = "corrected"
    again.loc[0, "status"] = "ok"
    third = deduplicate(again).frame
    assert third["status"].tolist() == ["ok", "corrected", "duplicate"]
    assert third["duplicate_of"].tolist() == ["", "", ids[0]]
    # A name change splits the group: the former duplicate comes back.
    third.loc[2, "name"] = "Marie Durand"
    assert deduplicate(third).frame["status"].tolist() == ["ok", "corrected", "ok"]


def test_dedup_ignores_rows_without_postal_code_or_name() -> None:
    rows = [ledger_dict(0, postal=""), ledger_dict(1, postal=""), ledger_dict(2, name="", processed_at=T1),
            ledger_dict(3, name="", processed_at=T2)]
    assert deduplicate(frame(rows)).frame["status"].tolist() == ["ok"] * 4


SPELLINGS = ["Marie Dupont", "DUPONT Marie", "dupont  marie", "Marie-Dupont", "Mârie DUPONT"]
TIMES = [T0, T1, T2, "2026-11-23T15:00:01Z"]


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(SPELLINGS), st.sampled_from(TIMES),
                          st.sampled_from(["a.pdf", "b.pdf"]), st.integers(1, 12), st.integers(1, 30)),
                min_size=2, max_size=7),
       st.randoms(use_true_random=False))
def test_dedup_points_to_the_earliest(signers: list[tuple[str, str, str, int, int]], rnd) -> None:
    rows = [ledger_dict(i, name=n, processed_at=t, source=s, page_no=p, row_number=r)
            for i, (n, t, s, p, r) in enumerate(signers)]
    rnd.shuffle(rows)
    out = deduplicate(frame(rows)).frame
    earliest = min(rows, key=lambda r: (r["processed_at"], r["source_file"], int(r["page"]),
                                        int(r["row_number"])))
    for _, got in out.iterrows():
        if got["signature_id"] == earliest["signature_id"]:
            assert (got["status"], got["duplicate_of"]) == ("ok", "")
        else:
            assert (got["status"], got["duplicate_of"]) == ("duplicate", earliest["signature_id"])
    assert validate_ledger_frame(out) == []
    assert deduplicate(out).frame.equals(out)  # idempotent


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(range(4)), st.lists(st.sampled_from(TIMES), min_size=4, max_size=4))
def test_appends_in_any_order_point_to_the_earliest(order: list[int], times: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "L.csv"
        for i in order:  # pages may be appended later with an earlier processed_at (e.g. a slow worker)
            append_results(ledger, [page(f"p{i}", (row(i + 1, SPELLINGS[i]),), number=i + 1)],
                             processed_at=times[i])
        df = read_ledger(ledger)
        first = min(range(4), key=lambda i: (times[i], i + 1))
        first_id = signature_id(sha(f"p{first}"), first + 1)
        assert df[df["signature_id"] == first_id]["status"].tolist() == ["ok"]
        others = df[df["signature_id"] != first_id]
        assert set(others["status"]) == {"duplicate"} and set(others["duplicate_of"]) == {first_id}


# --- exact round trip -----------------------------------------------------------------------------

TRICKY = ['Hélène Œuvray-Çà', 'Jean "Jojo" Martin', "Dupont, Marie", "Anne  Marie", "Lou  La", "Zoé X",
          'spa  ced', '"', ',', "'quote'", "naïve ß ﬁ", "Ева Петрова", "🙂 emoji", "SUM(A1)=1", "x=SUM(A1)"]
# what contract 2 keeps out of every free-text value: control characters, formula and space leads
UNSAFE = ["Anne\nMarie", "Lou\r\nLa", "Zoé\rX", "  spaced", "=SUM(A1)", "+33 6", "-x", "@cmd", "bell\x07",
          "\x1b[31mred", "a\u202eb", "tab\tx"]


def _round_trip(tmp_path: Path, names: list[str]) -> None:
    rows = [ledger_dict(i, name=n) for i, n in enumerate(names)]
    for r, n in zip(rows, names, strict=True):
        r["name_ocr"] = n[::-1]
        r["commune"] = n
    ledger = tmp_path / "L.csv"
    write_ledger(frame(rows), ledger)
    back = read_ledger(ledger)
    assert back["name"].tolist() == names
    assert back["name_ocr"].tolist() == [n[::-1] for n in names]
    assert back["commune"].tolist() == names
    other = pd.read_csv(ledger, dtype=str, keep_default_na=False)  # what other tools do
    assert other["name"].tolist() == names


def test_round_trip_tricky_names(tmp_path: Path) -> None:
    _round_trip(tmp_path, TRICKY)


@pytest.mark.parametrize("value", UNSAFE)
def test_a_frame_with_a_control_character_or_a_formula_lead_is_refused(tmp_path: Path, value: str) -> None:
    for column in ("name", "name_ocr", "postal_code_ocr", "commune", "reviewed_by", "source_file"):
        row = ledger_dict(0)
        row[column] = value
        problems = validate_ledger_frame(frame([row]))
        assert problems and all(f"column {column}" in p for p in problems), (column, problems)
        assert value not in " ".join(problems)  # the value itself is never echoed


@pytest.mark.parametrize("value", UNSAFE)
def test_a_contract_1_ledger_is_read_neutralised_and_written_as_contract_2(tmp_path: Path, value: str) -> None:
    ledger = tmp_path / "L.csv"
    row = ledger_dict(0)
    row["name_ocr"] = value
    row["source_file"] = value
    row["reviewed_by"] = value
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(LEDGER_COLUMNS)
    writer.writerow([row[c] for c in LEDGER_COLUMNS])
    ledger.write_text(buf.getvalue(), "utf-8")
    back = read_ledger(ledger)
    assert back.attrs["neutralised"] == 3
    assert validate_ledger_frame(back) == []
    source, ocr = back.at[0, "source_file"], back.at[0, "name_ocr"]
    assert is_safe_text(source) and is_safe_text(ocr) and is_safe_text(back.at[0, "reviewed_by"])
    assert path_bytes(source).removeprefix(b"./") == value.encode("utf-8")  # the path's bytes kept
    write_ledger(back, ledger)
    assert "neutralised" not in read_ledger(ledger).attrs


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).filter(is_safe_text),
                min_size=1, max_size=5))
def test_round_trip_any_text(tmp_path: Path, names: list[str]) -> None:
    rows = [ledger_dict(i, name=n) for i, n in enumerate(names)]
    ledger = tmp_path / "rt.csv"
    write_ledger(frame(rows), ledger)
    assert read_ledger(ledger)["name"].tolist() == names


# --- invalid ledgers ------------------------------------------------------------------------------


def _valid_ledger(path: Path, n: int = 3) -> list[dict[str, str]]:
    rows = [ledger_dict(i, name=f"Person {chr(65 + i)}") for i in range(n)]
    write_ledger(frame(rows), path)
    return rows


def test_invalid_cells_are_all_listed_with_row_and_column(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    rows = _valid_ledger(ledger)
    text = ledger.read_text("utf-8").splitlines()
    lines = list(csv.reader(io.StringIO("\n".join(text))))
    lines[2][LEDGER_COLUMNS.index("postal_code")] = "1000"  # a spreadsheet ate the leading zero
    lines[3][LEDGER_COLUMNS.index("status")] = "maybe"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    ledger.write_text(buf.getvalue(), "utf-8")
    with pytest.raises(LedgerError) as info:
        read_ledger(ledger)
    message = str(info.value)
    assert "row 2 (line 3), column postal_code: '1000'" in message
    assert "row 3 (line 4), column status: 'maybe'" in message
    assert "2 problems" in message and "hint:" in message and str(ledger) in message
    assert rows[1]["name"] not in message  # personal data stays out of messages


def test_wrong_header_is_reported(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    _valid_ledger(ledger)
    text = ledger.read_text("utf-8")
    ledger.write_text(text.replace("postal_code,", "code_postal,", 1), "utf-8")
    with pytest.raises(LedgerError) as info:
        read_ledger(ledger)
    assert "missing column(s): postal_code" in str(info.value)
    assert "unexpected column(s): 'code_postal'" in str(info.value)
    swapped = list(EXPECTED_COLUMNS)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert "out of order" in validate_ledger_frame(pd.DataFrame(columns=swapped))[0]


def test_bom_short_rows_and_inconsistent_ids_are_reported(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    _valid_ledger(ledger)
    lines = ledger.read_text("utf-8").split("\n")
    lines[1] = lines[1].rsplit(",", 1)[0]  # one value short
    other = sha("elsewhere")
    lines[2] = lines[2].replace(sha("row-1"), other)  # page hash no longer matches the id
    ledger.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    with pytest.raises(LedgerError) as info:
        read_ledger(ledger)
    message = str(info.value)
    assert "byte order mark" in message
    assert "row 1 (line 2): has 19 values, expected 20" in message
    assert "row 2 (line 3), column signature_id" in message


@pytest.mark.parametrize("edit, expected", [
    (lambda lines: [lines[0], lines[1].rsplit(",", 1)[0], *lines[2:]], "row 1 (line 2): has 19 values, expected 20"),
    (lambda lines: [lines[0], lines[1] + ",", *lines[2:]], "has 21 values, expected 20"),
    (lambda lines: [lines[0], lines[1], "", *lines[2:]], "row 2 (line 3): has 0 values, expected 20"),
    (lambda lines: [lines[0], lines[1].rsplit(",", 1)[0], lines[2] + ",", *lines[3:]], "has 19 values"),
])
def test_hand_edits_of_a_file_without_quotes_are_found(tmp_path: Path, edit, expected: str) -> None:
    # no quotes in the file: the quick reader counts commas instead of writing the frame out again
    ledger = tmp_path / "L.csv"
    _valid_ledger(ledger)
    lines = ledger.read_text("utf-8").split("\n")[:-1]
    ledger.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    with pytest.raises(LedgerError) as info:
        read_ledger(ledger)
    assert expected in str(info.value)


def test_a_file_with_quotes_reads_back_exactly(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    rows = [ledger_dict(i, name=name) for i, name in enumerate(['DUPONT, Marie', 'Jean "Jo" Martin', "Léa"])]
    write_ledger(frame(rows), ledger)
    assert b'"' in ledger.read_bytes()
    assert read_ledger(ledger).equals(frame(rows))
    ledger.write_bytes(ledger.read_bytes().replace(b'"DUPONT, Marie"', b'"DUPONT, Marie" '))  # not canonical
    with pytest.raises(LedgerError):
        read_ledger(ledger)


def test_fast_check_agrees_with_jsonschema() -> None:
    validator = Draft202012Validator(load_schema())
    base = ledger_dict(0)
    variants = [base, {**base, "postal_code": "1000"}, {**base, "page": 3}, {**base, "status": "x"},
                {**base, "source_file": ""}, {k: v for k, v in base.items() if k != "flags"},
                {**base, "x": ""}]
    passes = _prescreen()
    assert passes is not None
    for variant in variants:
        assert passes(variant) == (not list(validator.iter_errors(variant)))


def _broken_frames() -> list[pd.DataFrame]:
    """Frames with one problem each, of every kind the column-wise check looks for."""
    rows = [ledger_dict(i, name=f"Person {chr(65 + i)}") for i in range(4)]
    rows[3]["status"], rows[3]["duplicate_of"] = "duplicate", rows[0]["signature_id"]
    broken = []
    for column, value in (("postal_code", "1000"), ("postal_code", "01000\n"), ("processed_at", "yesterday"),
                          ("processed_at", T0 + "\n"), ("source_file", ""), ("status", "done"),
                          ("signature_id", rows[1]["signature_id"]), ("signature_id", "0123456789abcdef-01"),
                          ("signature_id", rows[2]["signature_id"][:-2] + "7"), ("row_number", "07"),
                          ("page_sha256", sha("other")), ("duplicate_of", "0123456789abcdef-01"),
                          ("duplicate_of", ""), ("name_confidence", "0.9"), ("page", "0")):
        changed = [dict(r) for r in rows]
        changed[2 if column != "duplicate_of" else 3][column] = value
        broken.append(frame(changed))
    missing = frame(rows)
    missing.loc[1, "commune"] = float("nan")  # a missing cell
    broken.append(missing)
    not_text = frame(rows).astype(object)
    not_text.loc[0, "name"] = 12
    broken.append(not_text)
    return [frame(rows), *broken]


def test_column_wise_check_agrees_with_the_row_by_row_check() -> None:
    frames = _broken_frames()
    verdicts = []
    for df in frames:
        rowwise = row_problems((f"row {i}", r) for i, r in _frame_rows(df))
        assert _fast_valid(df) == (rowwise == []), rowwise
        verdicts.append(rowwise == [])
    assert verdicts[0] and not any(verdicts[1:])  # the first is valid, every other one is not


def test_ids_are_checked_through_page_and_row() -> None:
    assert _id_follows_from_parts()  # the shipped schema lets the id be checked through its parts
    pattern = load_schema()["properties"]["signature_id"]["pattern"]
    for digest, number in ((sha("x"), 0), (sha("y"), 7), (sha("z"), 35), (sha("w"), 1234)):
        assert re.search(pattern, signature_id(digest, number))


def test_trailing_newline_does_not_sneak_past_a_pattern() -> None:
    problems = validate_ledger_frame(frame([ledger_dict(0, postal="01000\n")]))
    assert problems == ["row 1 (line 2), column postal_code: ends with a line break",
                        "row 1 (line 2), column postal_code_ocr: ends with a line break"]


def test_write_refuses_an_invalid_frame(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    _valid_ledger(ledger)
    before = ledger.read_bytes()
    bad = ledger_dict(0, postal="1000")
    bad["duplicate_of"] = "0123456789abcdef-01"
    with pytest.raises(LedgerError) as info:
        write_ledger(frame([bad]), ledger)
    assert "row 1 (line 2), column postal_code" in str(info.value)
    assert "row 1 (line 2), column duplicate_of" in str(info.value)
    assert ledger.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L.csv"]  # no temp file left behind


def test_unwritable_location_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as info:
        write_ledger(frame([ledger_dict(0)]), blocker / "L.csv")
    assert info.value.hint
    with pytest.raises(OutputError):
        append_results(blocker / "L.csv", [page("p1", (row(1),))], processed_at=T0)


# --- locking --------------------------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(sidecar_paths(ledger).lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with (pytest.raises(LedgerLockedError, match="another scan-pipeline run is writing this ledger") as info,
              ledger_lock(ledger, timeout=0.5)):
            pass
        assert time.monotonic() - start < 3
        assert info.value.hint and info.value.exit_code == 6
        with pytest.raises(LedgerLockedError):
            append_results(ledger, [page("p1", (row(1),))], processed_at=T0, lock_timeout=0.5)
        assert not ledger.exists()
    finally:
        holder.communicate(input="", timeout=10)  # closing stdin lets the holder exit
    with ledger_lock(ledger, timeout=0.5):  # released with the process
        pass


# --- merge, erase, crash safety -------------------------------------------------------------------


def _group_ledger(path: Path, items: list[tuple[str, str, str]]) -> None:
    """A ledger of (seed, name, postal code) single-row pages, written through append_results."""
    for k, (seed, name, postal) in enumerate(items):
        append_results(path, [page(seed, (row(1, name, postal),), number=k + 1)], processed_at=TIMES[k % 4])


GROUP_A = [("a1", "Marie Dupont", "01000"), ("a2", "Jean Martin", "75011"), ("s1", "Léa Roux", "13001")]
GROUP_B = [("b1", "DUP0NT Marie", "01000"), ("s1", "Léa Roux", "13001"), ("b2", "Paul Petit", "69001")]
GROUP_C = [("c1", "MARTIN J.", "75011"), ("c2", "Anne Leroy", "33000")]


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations([0, 1, 2]))
def test_merge_is_order_independent(order: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, items in zip("ABC", (GROUP_A, GROUP_B, GROUP_C), strict=True):
            paths.append(Path(tmp) / f"{name}.csv")
            _group_ledger(paths[-1], items)
        out = Path(tmp) / "M.csv"
        summary = merge_ledgers([paths[i] for i in order], out)
        df = read_ledger(out)
        assert summary.same_rows == 1 and len(df) == 7  # s1's row is in A and B: kept once
        assert int(counts_as_signer(df).sum()) == 5  # Dupont and Martin signed twice
        details = {d["signature_id"]: d for d in map(json.loads, sidecar_paths(out).details.read_text("utf-8")
                                                     .splitlines())}
        shared = signature_id(sha("s1"), 1)
        assert details[shared]["merged_from"] == sorted([str(paths[0]), str(paths[1])])
        assert (sidecar_paths(out).crops / sha("b2")[:16] / "01-nom.png").exists()  # crops copied
        reference = Path(tmp) / "R.csv"
        merge_ledgers(paths, reference)
        assert out.read_bytes() == reference.read_bytes()


def test_merge_details_are_json_lines(tmp_path: Path) -> None:
    """Rows with details of their own and rows without (formatted without json.dumps) read back alike."""
    a, b, out = tmp_path / "A.csv", tmp_path / "B.csv", tmp_path / "M.csv"
    rows = [ledger_dict(i, name=name) for i, name in enumerate(["Marie Dupont", "DUPONT Marie", "Jean Martin",
                                                                 "Léa Roux", "DUPONT M."])]
    write_ledger(frame(rows[:3]), a)  # no details file
    write_ledger(frame(rows[2:]), b)  # row 2 is in both
    extra = {"signature_id": rows[3]["signature_id"], "name_alternatives": ["LÉA \"ROUX\""], "merged_from": ["x"]}
    sidecar_paths(b).details.write_text(json.dumps(extra, ensure_ascii=False) + "\n", encoding="utf-8")
    merge_ledgers([b, a], out)
    df = read_ledger(out)
    lines = sidecar_paths(out).details.read_text("utf-8").splitlines()
    details = [json.loads(x) for x in lines]
    assert [d["signature_id"] for d in details] == df["signature_id"].tolist()
    for line, obj in zip(lines, details, strict=True):
        assert line == json.dumps(obj, ensure_ascii=False)  # the very text json.dumps gives
    by_id = {d["signature_id"]: d for d in details}
    assert by_id[rows[2]["signature_id"]]["merged_from"] == sorted([str(a), str(b)])
    assert by_id[rows[0]["signature_id"]]["merged_from"] == [str(a)]
    assert by_id[rows[3]["signature_id"]]["name_alternatives"] == ["LÉA \"ROUX\""]
    assert list(by_id[rows[3]["signature_id"]]) == ["signature_id", "name_alternatives", "merged_from",
                                                    "duplicate_candidates"]
    dupont = [rows[k]["signature_id"] for k in (0, 1, 4)]
    assert by_id[dupont[1]]["duplicate_candidates"] == [dupont[0], dupont[2]]  # the signer's other rows
    assert by_id[rows[2]["signature_id"]]["duplicate_candidates"] == []


def test_erase_removes_rows_crops_details_and_stays_erased(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    first = page("p1", (row(1, "Marie Dupont"), row(2, "Jean Martin", "75011")))
    later = page("p2", (row(3, "DUPONT Marie"), row(4, "Paul Petit", "69001"), row(5, "MARTIN Jean", "75011")))
    append_results(ledger, [first], processed_at=T0)
    append_results(ledger, [later], processed_at=T1)
    martin1, martin2 = signature_id(sha("p1"), 2), signature_id(sha("p2"), 5)
    assert read_ledger(ledger).set_index("signature_id").loc[martin2, "duplicate_of"] == martin1
    # erase one row by id: the duplicate pointing at it now points to nothing (it is the first)
    summary = erase_rows(ledger, ids=[martin1])
    assert (summary.rows_erased, summary.repointed) == (1, 1)
    df = read_ledger(ledger).set_index("signature_id")
    assert df.loc[martin2, "status"] == "ok" and df.loc[martin2, "duplicate_of"] == ""
    # erase a signer by name: every row of that signer goes, with crops and details
    summary = erase_rows(ledger, name="dupont marie", postal_code="01000")
    assert summary.rows_erased == 2 and summary.crops_removed == 4
    df = read_ledger(ledger)
    assert find_rows(df, "Marie Dupont", "01000").empty
    assert not (sidecar_paths(ledger).crops / sha("p1")[:16] / "01-nom.png").exists()
    details = sidecar_paths(ledger).details.read_text("utf-8")
    assert signature_id(sha("p1"), 1) not in details
    audit = sidecar_paths(ledger).audit.read_text("utf-8")
    assert "Dupont" not in audit and "DUPONT" not in audit and "Martin" not in audit  # no personal data
    # the same scans again (even with --reprocess) never bring them back
    append_results(ledger, [first, later], processed_at=T2, reprocess=True)
    again = read_ledger(ledger)
    assert find_rows(again, "Marie Dupont", "01000").empty
    assert martin1 not in set(again["signature_id"]) and len(again) == 2


def test_erase_works_without_crops_and_sidecars(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    write_ledger(frame([ledger_dict(0), ledger_dict(1, name="Jean Martin")]), ledger)
    summary = erase_rows(ledger, name="Marie DUPONT", postal_code="01000")
    assert summary.rows_erased == 1 and summary.crops_removed == 0
    assert read_ledger(ledger)["name"].tolist() == ["Jean Martin"]
    with pytest.raises(PipelineError, match="no row with signature_id") as info:
        erase_rows(ledger, ids=["0123456789abcdef-01"])
    assert info.value.exit_code == 2


def test_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(sidecar_paths(ledger).lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    import threading
    threading.Timer(0.5, lambda: holder.communicate(input="", timeout=10)).start()
    start = time.monotonic()
    append_results(ledger, [page("p1", (row(1),))], processed_at=T0, lock_timeout=10)  # waits, then writes
    assert time.monotonic() - start >= 0.4
    assert len(read_ledger(ledger)) == 1


WRITER = """
import random, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.test_ledger import page, row
from scan_pipeline.ledger.append import append_results
ledger, run = Path(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(run)
print("ready", flush=True)
for step in range(50):
    if step and rnd.random() < 0.25:  # rewrite an earlier page of this run with other names
        k = rnd.randrange(step)
        rows = tuple(row(i + 1, f"Re {run} {k} {i} {step}", "75011") for i in range(1 + k % 3))
        append_results(ledger, [page(f"r{run}-{k}", rows)], processed_at="2026-11-23T15:00:00Z", reprocess=True)
    else:
        k = step
        rows = tuple(row(i + 1, f"Nom {run} {k} {i}", "75011") for i in range(1 + k % 3))
        append_results(ledger, [page(f"r{run}-{k}", rows)], processed_at="2026-11-23T15:00:00Z")
    print("done", step, k, ";".join(r.name.value for r in rows), flush=True)
print("finished", flush=True)
"""


def test_kill_9_never_loses_or_doubles_a_row(tmp_path: Path) -> None:
    import os
    import random
    import signal

    ledger = tmp_path / "L.csv"
    rnd = random.Random(9)
    state: dict[str, str] = {}  # signature_id -> name, after the last acknowledged write
    root = str(Path(__file__).resolve().parent.parent)
    kills = 0
    for run in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ledger), str(run), root],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        kills += proc.returncode == -signal.SIGKILL
        pending: dict[str, str] | None = None
        for line in out.splitlines():
            if line.startswith("done"):
                _, _, k, names = line.split(" ", 3)
                for i, name in enumerate(names.split(";")):
                    state[signature_id(sha(f"r{run}-{k}"), i + 1)] = name
        # the write in progress at the kill may have been renamed in before its acknowledgement
        df = read_ledger(ledger)  # valid, or this raises
        got = dict(zip(df["signature_id"], df["name"], strict=True))
        assert len(got) == len(df)  # no row twice
        if got != state:
            extra = {s: n for s, n in got.items() if state.get(s) != n}
            assert set(state) <= set(got) and all(f" {run} " in n for n in extra.values()), (extra, pending)
            state = got
    assert kills >= 3


# --- people's decisions are data (issue #20) ------------------------------------------------------


def _review(ledger: Path, lines: dict[str, dict[str, str]], at: str, who: str = "Alice Martin") -> None:
    """A volunteer's returned file (CSV, as a spreadsheet saves it) applied through review import."""
    from scan_pipeline.review.apply import import_review

    keys = ["signature_id", "name", "postal_code", "signature", "decision"]
    text = ";".join(keys) + "\n" + "".join(";".join([sid] + [edit.get(k, "") for k in keys[1:]]) + "\n"
                                           for sid, edit in lines.items())
    back = ledger.parent / f"back-{at[:13]}.csv"
    back.write_text(text, "utf-8")
    summary = import_review(back, ledger, reviewer=who, now=at)
    assert summary.written and not summary.invalid


def _sid(seed: str, number: int) -> str:
    return signature_id(sha(seed), number)


def test_reprocess_keeps_every_decision_and_flags_a_new_reading_that_differs(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    rows = (row(1, "Marie Dupond", flags=("name_low_conf",)), row(2, "Jean Martin", "75011", flags=("name_low_conf",)),
            row(3, "Léa Roux", "13001", flags=("name_low_conf",)), row(4, "Paul Petit", "69001"),
            row(5, "Anne Blanc", "33000", flags=("name_low_conf",)))
    append_results(ledger, [page("p1", rows)], processed_at=T0)
    _review(ledger, {_sid("p1", 1): {"name": "Marie Dupont", "decision": "correct"},
                     _sid("p1", 2): {"decision": "not a signature"},
                     _sid("p1", 3): {"decision": "ok"},
                     _sid("p1", 5): {"decision": "ok"}}, at=T1)
    decided = read_ledger(ledger).set_index("signature_id")
    # read again: row 1 as before (the reading the volunteer corrected), row 3 otherwise now, row 5 not found
    again = page("p1", (row(1, "Marie Dupond", flags=("name_low_conf",)), row(2, "Jean Martin", "75011"),
                        row(3, "Léo Rouxel", "13001", flags=("name_low_conf",)), row(4, "Paul Petit", "69001")))
    summary = append_results(ledger, [again], processed_at=T2, reprocess=True)
    assert (summary.decisions_kept, summary.decisions_differ, summary.decisions_unmatched) == (3, 1, 1)
    after = read_ledger(ledger).set_index("signature_id")
    for n in (1, 2, 3, 5):
        sid = _sid("p1", n)
        for column in ("name", "postal_code", "signature", "status", "reviewed_by", "reviewed_at"):
            assert after.at[sid, column] == decided.at[sid, column], (n, column)
    assert after.at[_sid("p1", 1), "status"] == "corrected" and after.at[_sid("p1", 1), "flags"] == ""
    assert after.at[_sid("p1", 2), "status"] == "rejected"
    assert after.at[_sid("p1", 3), "status"] == "ok" and after.at[_sid("p1", 3), "flags"] == "row_reread_differs"
    assert after.at[_sid("p1", 3), "name_ocr"] == "Léo Rouxel"  # the machine's new reading, beside the person's
    assert after.at[_sid("p1", 5), "flags"] == "row_reread_missing"
    assert after.at[_sid("p1", 4), "processed_at"] == T2 and after.at[_sid("p1", 4), "reviewed_at"] == ""
    crops = sidecar_paths(ledger).crops / sha("p1")[:16]
    assert (crops / "05-nom.png").exists()  # the kept row keeps its images
    details = read_details(sidecar_paths(ledger).details)
    assert details[_sid("p1", 1)]["decision"]["read"]["name"] == "Marie Dupond"
    # and once more: nothing new to say, the same ledger
    append_results(ledger, [again], processed_at=T2, reprocess=True)
    assert read_ledger(ledger).equals(after.reset_index())


def test_merging_again_into_a_merged_ledger_keeps_the_decisions_made_there(tmp_path: Path) -> None:
    a, b, merged = tmp_path / "A.csv", tmp_path / "B.csv", tmp_path / "M.csv"
    append_results(a, [page("a", (row(1, "Marie Dupont", flags=("name_low_conf",)), row(2, "Jean Martin", "75011")))],
                     processed_at=T0)
    append_results(b, [page("b", (row(1, "Léa Roux", "13001"),))], processed_at=T0)
    merge_ledgers([a, b], merged)
    _review(merged, {_sid("a", 1): {"decision": "not a signature"}}, at=T1)
    append_results(a, [page("a2", (row(1, "Paul Petit", "69001"),))], processed_at=T1)  # group A goes on
    summary = merge_ledgers([a, b], merged)
    out = read_ledger(merged).set_index("signature_id")
    assert out.at[_sid("a", 1), "status"] == "rejected" and out.at[_sid("a", 1), "reviewed_by"] == "Alice Martin"
    assert _sid("a2", 1) in out.index and len(out) == 4
    assert summary.rows_read == 4 and summary.decisions_conflicting == 0
    details = read_details(sidecar_paths(merged).details)
    assert details[_sid("a", 1)]["merged_from"] == [str(a)]


def test_two_inputs_that_disagree_on_a_decided_row_keep_the_later_decision(tmp_path: Path) -> None:
    a, b, merged = tmp_path / "A.csv", tmp_path / "B.csv", tmp_path / "M.csv"
    for ledger in (a, b):  # both groups processed the same scan
        append_results(ledger, [page("s", (row(1, "Marie Dupont", flags=("name_low_conf",)),
                                             row(2, "Jean Martin", "75011", flags=("name_low_conf",))))],
                         processed_at=T0)
    _review(a, {_sid("s", 1): {"decision": "ok"}, _sid("s", 2): {"decision": "ok"}}, at="2026-11-24T10:00:00Z")
    _review(b, {_sid("s", 1): {"decision": "not a signature"}, _sid("s", 2): {"decision": "ok"}},
            at="2026-11-24T12:00:00+01:00", who="Bob")  # 11:00 UTC: later than A's, earlier as text
    _review(a, {_sid("s", 2): {"name": "Jean Martinez", "decision": "correct"}}, at="2026-11-24T13:00:00Z")
    for order in ([a, b], [b, a]):
        summary = merge_ledgers(order, merged)
        out = read_ledger(merged).set_index("signature_id")
        assert out.at[_sid("s", 1), "status"] == "rejected" and out.at[_sid("s", 1), "reviewed_by"] == "Bob"
        assert out.at[_sid("s", 2), "name"] == "Jean Martinez"
        assert summary.decisions_conflicting == 2
        merged.unlink()
        for side in sidecar_paths(merged).details, sidecar_paths(merged).audit:
            side.unlink(missing_ok=True)
