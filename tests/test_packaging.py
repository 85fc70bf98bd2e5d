"""The installed package carries its data: the command never reads the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_schemas_and_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("scan_pipeline-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("scan_pipeline/schemas/ledger.schema.json", "scan_pipeline/schemas/template.schema.json",
                   "scan_pipeline/data/templates/appel-defenseurs.json", "scan_pipeline/data/config.toml",
                   "scan_pipeline/data/postal_codes.csv.gz", "scan_pipeline/data/digits_generator.npz",
                   "scan_pipeline/data/synth_names.json", "scan_pipeline/data/digit_model.npz",
                   "scan_pipeline/data/names_lexicon.tsv.gz"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "samples/")) for n in names)


def test_top_level_schemas_are_the_package_schemas():
    assert (ROOT / "schemas" / "ledger.schema.json").read_bytes() == \
        (ROOT / "scan_pipeline" / "schemas" / "ledger.schema.json").read_bytes()
