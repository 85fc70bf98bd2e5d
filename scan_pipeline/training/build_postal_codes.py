"""Rebuild scan_pipeline/data/postal_codes.csv.gz from the npm package `codes-postaux`.

Source: codes-postaux 4.1.2 (MIT licence, https://github.com/BaseAdresseNationale/codes-postaux),
built upstream from the INSEE Code Officiel Géographique and the DGFiP FIMOCT file (data.gouv.fr).
Get the package without installing it (no Node.js code is run, only the JSON is read):

    npm pack codes-postaux@4.1.2        # writes codes-postaux-4.1.2.tgz
    python -m scan_pipeline.training.build_postal_codes codes-postaux-4.1.2.tgz

The argument may also be the unpacked package/codes-postaux.json.

Output: a gzip CSV (UTF-8, "\\n" line ends), header `postal_code,departement,communes`, one line per
distinct postal code, sorted by code. `communes` is the deduplicated list of commune names
(nomCommune, accents kept) served by the code, sorted ignoring accents, joined with "|".
`departement` comes from the INSEE commune code: its first 2 characters (2A/2B for Corsica),
or 3 for the 97x overseas departements.
A few codes serve communes of two departements (e.g. 75016 also covers Boulogne-Billancourt, 92);
the departement whose number matches the code's prefix wins, then the most frequent one.

The gzip header has mtime=0 and no file name, so re-running on the same input gives identical bytes
(with the same zlib).

Not covered, because codes-postaux does not list them (and we do not invent codes): 98x codes
(Monaco 98000, Wallis-et-Futuna 986xx, Polynésie française 987xx, Nouvelle-Calédonie 988xx) and
the 977/978 collectivities (Saint-Barthélemy 97133, Saint-Martin 97150 are absent too).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
import sys
import tarfile
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

EXPECTED_VERSION = "4.1.2"
JSON_MEMBER = "package/codes-postaux.json"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "data" / "postal_codes.csv.gz"
POSTAL_RE = re.compile(r"\d{5}")
COMMUNE_RE = re.compile(r"(\d\d|2[AB])\d{3}")


def read_source(path: Path) -> tuple[list[dict[str, str]], str | None]:
    """Return the JSON records and the package version (None when unknown)."""
    if path.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path, "r:gz") as tar:
            # Read only the two members we need; never extract the archive to disk.
            data = tar.extractfile(JSON_MEMBER)
            if data is None:
                raise SystemExit(f"{path}: no {JSON_MEMBER} in the archive")
            records = json.load(data)
            meta = tar.extractfile("package/package.json")
            version = json.load(meta).get("version") if meta is not None else None
        return records, version
    records = json.loads(path.read_text(encoding="utf-8"))
    meta_path = path.with_name("package.json")
    version = json.loads(meta_path.read_text(encoding="utf-8")).get("version") if meta_path.is_file() else None
    return records, version


def departement_of(code_commune: str) -> str:
    # Overseas departements have 3-character numbers (971..976); Corsica's INSEE codes start 2A/2B.
    return code_commune[:3] if code_commune.startswith("97") else code_commune[:2]


def pick_departement(postal_code: str, counts: Counter[str]) -> str:
    def prefix(dep: str) -> str:
        return "20" if dep in ("2A", "2B") else dep

    matching = [d for d in counts if postal_code.startswith(prefix(d))]
    pool = matching or list(counts)
    return min(pool, key=lambda d: (-counts[d], d))


def name_key(name: str) -> tuple[str, str]:
    # Sort as a French reader would (Géovreisset before Groissiat), independent of the locale.
    bare = "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))
    return bare.casefold(), name


def build_rows(records: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    communes: dict[str, set[str]] = defaultdict(set)
    deps: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in records:
        code = str(rec["codePostal"]).strip()
        insee = str(rec["codeCommune"]).strip()
        name = str(rec["nomCommune"]).strip()
        if not POSTAL_RE.fullmatch(code):
            raise SystemExit(f"unexpected postal code {code!r} in {rec}")
        if not COMMUNE_RE.fullmatch(insee):
            raise SystemExit(f"unexpected INSEE commune code {insee!r} in {rec}")
        if not name or "|" in name:
            raise SystemExit(f"unexpected commune name {name!r} in {rec}")
        communes[code].add(name)
        deps[code][departement_of(insee)] += 1
    return [(code, pick_departement(code, deps[code]), "|".join(sorted(communes[code], key=name_key)))
            for code in sorted(communes)]


def render(rows: list[tuple[str, str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("postal_code", "departement", "communes"))
    writer.writerows(rows)
    # mtime=0 and gzip.compress (no file name in the header) keep the bytes reproducible.
    return gzip.compress(buf.getvalue().encode("utf-8"), compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="codes-postaux-4.1.2.tgz or package/codes-postaux.json")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the gzip CSV (default: {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)

    records, version = read_source(args.source)
    if version is not None and version != EXPECTED_VERSION:
        print(f"warning: codes-postaux {version}, expected {EXPECTED_VERSION}; "
              "tests count codes for that version", file=sys.stderr)
    rows = build_rows(records)
    payload = render(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(payload)
    print(f"{args.output}: {len(rows)} postal codes from {len(records)} records, {len(payload)} bytes",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
