from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.core.errors import TemplateError
from scan_pipeline.core.template import load_template, parse_template, validation_errors


def bundled_data() -> dict:
    from importlib import resources

    return json.loads(resources.files("scan_pipeline").joinpath("data/templates/appel-defenseurs.json")
                      .read_text("utf-8"))


def test_bundled_template_is_the_seed_sheet():
    t = load_template()
    assert t.column_keys == ("row_number", "name", "postal_code", "signature")
    assert t.columns[1].header_words == ("NOM", "PRENOM")
    assert t.columns[2].header_words == ("CODE", "POSTAL")
    assert t.rows_on_page(1) == tuple(range(1, 11))
    assert t.rows_on_page(2) == (*range(11, 21), *range(22, 36))
    assert 21 not in t.rows_on_page(2)


def test_every_error_is_listed_with_its_json_path():
    data = bundled_data()
    data["columns"][0]["width"] = -1
    data["pages"][1]["content"][0]["rows"] = "eleven"
    del data["paper"]["margin_mm"]
    errors = validation_errors(data)
    paths = " ".join(errors)
    assert "$.columns[0].width" in paths
    assert "$.pages[1].content[0]" in paths
    assert "$.paper" in paths and "margin_mm" in paths


def test_semantic_errors():
    data = bundled_data()
    data["pages"][1]["content"][0]["rows"] = [10, 11]  # row 10 is already on page 1
    data["columns"][3]["width"] = 0.9
    with pytest.raises(TemplateError) as info:
        parse_template(data)
    assert "row 10 is already printed" in info.value.message
    assert "widths add up" in info.value.message


def test_cli_validate_reports_bad_template_with_exit_3(tmp_path):
    data = bundled_data()
    data["columns"][1]["key"] = "surname"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["sheet", "validate", str(bad)])
    assert result.exit_code == 3
    assert "$.columns[1].key" in result.output


def test_cli_validate_accepts_the_bundled_template(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(bundled_data()), encoding="utf-8")
    result = CliRunner().invoke(app, ["sheet", "validate", str(good)])
    assert result.exit_code == 0
    assert "1-20, 22-35" in result.output
