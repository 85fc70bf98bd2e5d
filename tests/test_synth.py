from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.synth.samples import generate

from .conftest import load_truth


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files(tmp_path, template):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, template, 1, seed=3, modes=("gray",), formats=("png",))
    generate(b, template, 1, seed=3, modes=("gray",), formats=("png",))
    assert _digest(a) == _digest(b)
    c = tmp_path / "c"
    generate(c, template, 1, seed=4, modes=("gray",), formats=("png",))
    assert _digest(a) != _digest(c)


def test_truth_describes_every_printed_row(scan_corpus, template):
    truth = load_truth(scan_corpus)
    codes = load_postal_list()
    pages = [(f, p) for f in truth["files"] for p in f["pages"]]
    assert len(pages) == 4
    for f, page in pages:
        assert (scan_corpus / f["file"]).exists()
        numbers = [r["row_number"] for r in page["rows"]]
        assert numbers == list(template.rows_on_page(page["sheet_page"]))
        w, h = page["pixel_size"]
        for row in page["rows"]:
            assert set(row["cells"]) == {"row_number", "name", "postal_code", "signature"}
            x0, y0, x1, y1 = row["cells"]["name"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            if row["written"]:
                assert row["postal_code"] in codes
                assert row["name"] and row["person_id"]
                assert row["signature"] in ("signed", "empty", "struck")
            else:
                assert row["name"] == "" and row["signature"] == "empty"


def test_image_files_do_not_reveal_the_page_by_name(scan_corpus):
    truth = load_truth(scan_corpus)
    pngs = [f for f in truth["files"] if f["format"] == "png"]
    assert len(pngs) == 2  # one file per page
    assert all("page" not in f["file"] and "-a." not in f["file"] for f in pngs)


def test_repeated_signers_exist_across_sheets(tmp_path, template):
    truth = generate(tmp_path, template, 3, seed=8, modes=("bilevel",), formats=("tiff",))
    rows = [r for f in truth["files"] for p in f["pages"] for r in p["rows"] if r["written"]]
    ids = [r["person_id"] for r in rows]
    assert len(set(ids)) < len(ids)  # someone signed twice
    assert any(r["repeat"] for r in rows)
    assert any("É" in r["name"].upper() or "È" in r["name"].upper() or "Ë" in r["name"].upper()
               or "Ï" in r["name"].upper() for r in rows)


def test_cli_generate_rejects_unknown_mode(tmp_path):
    result = CliRunner().invoke(app, ["samples", "generate", str(tmp_path / "x"), "--modes", "scan,fax"])
    assert result.exit_code == 2
    assert "fax" in result.output


def test_cli_generate_writes_truth(tmp_path):
    result = CliRunner().invoke(app, ["samples", "generate", str(tmp_path), "--sheets", "1", "--seed", "2",
                                      "--modes", "photo", "--formats", "jpg"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert truth["generator"]["seed"] == 2
    assert {f["mode"] for f in truth["files"]} == {"photo"}
    assert len(list(tmp_path.glob("*.jpg"))) == 2


@pytest.mark.parametrize("mode", ["scan", "gray", "bilevel", "photo"])
def test_each_mode_renders(tmp_path, template, mode):
    truth = generate(tmp_path, template, 1, seed=1, modes=(mode,), formats=("png",))
    assert all(f["mode"] == mode for f in truth["files"])


def test_truth_validates_against_its_schema(scan_corpus):
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("scan_pipeline").joinpath("schemas/truth.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(schema).validate(load_truth(scan_corpus))


def _word_crops(tmp_path, words):
    """Crops of 'handwritten' words for the test (drawn with a handwriting font: no real person's hand)."""
    import cv2
    import numpy as np

    from scan_pipeline.synth.samples import _text_mask, handwriting_fonts

    lines = ["file,label"]
    for i, word in enumerate(words):
        mask = _text_mask(word, handwriting_fonts()[0], 28, 0.0, 0)
        cv2.imwrite(str(tmp_path / f"w{i}.png"), (255 - mask * 255).astype(np.uint8))
        lines.append(f"w{i}.png,{word}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "labels.csv"


def test_names_written_with_real_crops(tmp_path, template):
    from importlib import resources

    import jsonschema

    from scan_pipeline.synth.samples import NameCrops

    crops = NameCrops.read(_word_crops(tmp_path, ["LEBEL", "JEAN-LOUP", "KY", "MARTIN"]))
    truth = generate(tmp_path / "out", template, 1, seed=5, modes=("scan",), formats=("png",), name_crops=crops)
    rows = [r for f in truth["files"] for p in f["pages"] for r in p["rows"] if r["written"]]
    real = [r for r in rows if r["name_source"] == "real"]
    assert real and len(real) < len(rows)  # both kinds, to be scored apart
    for r in real:
        words = r["name_written"].split()
        assert len(words) == 2 and set(words) <= set(crops.labels)
        assert r["name"].split()[0] == words[0]  # the first crop is the surname (NOM Prénom)
    given = {r["name"].split()[1] for r in real if r["name_written"].split()[1] == "JEAN-LOUP"}
    assert given <= {"Jean-Loup"}  # a given name is written as the ledger does
    assert truth["generator"]["name_crops"]["count"] == 4
    schema = json.loads(resources.files("scan_pipeline").joinpath("schemas/truth.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(schema).validate(truth)
    plain = generate(tmp_path / "plain", template, 1, seed=5, modes=("scan",), formats=("png",))
    assert {r.get("name_source") for f in plain["files"] for p in f["pages"] for r in p["rows"] if r["written"]} \
        == {"font"}


def test_cli_generate_name_crops_errors_say_which_line(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\nmissing.png,DUPONT\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["samples", "generate", str(tmp_path / "out"), "--sheets", "1",
                                      "--name-crops", str(tmp_path / "labels.csv")])
    assert result.exit_code == 2  # a bad option argument
    assert "line 2" in result.output and "missing.png" in result.output
