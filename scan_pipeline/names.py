"""Handwritten names: clean the cell, read it, and write it as a ledger expects (NOM Prénom)."""

from __future__ import annotations

import re

import numpy as np

from .cells import prepare_for_ocr
from .config import NamesConfig
from .engines import OcrEngine
from .records import FieldReading

_NOT_NAME = re.compile(r"[^A-Za-zÀ-ÖØ-öø-ÿŒœ' \-]")


def clean_text(raw: str) -> str:
    """Letters, spaces, hyphens and apostrophes only; single spaces; no stray edges."""
    text = _NOT_NAME.sub(" ", raw)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" -'")


def _given(word: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in word.split("-"))


def ledger_form(text: str) -> str:
    """`NOM Prénom`: the surname in capitals, given names capitalised, accents kept.

    The header asks for the surname first; a word written all in capitals among others that are
    not is taken as the surname wherever it stands.
    """
    words = text.split()
    if not words:
        return ""
    caps = [w.isupper() and len(w) > 1 for w in words]
    if any(caps) and not all(caps):
        surname = [w for w, c in zip(words, caps) if c]
        given = [w for w, c in zip(words, caps) if not c]
    else:
        surname, given = words[:1], words[1:]
    return " ".join([*(w.upper() for w in surname), *(_given(w) for w in given)])


def read_name(crop: np.ndarray, has_ink: bool, engine: OcrEngine,
              config: NamesConfig) -> tuple[FieldReading, tuple[str, ...]]:
    """The name in a cleaned cell, with its band and flags."""
    if not has_ink:
        return FieldReading("", "", 1.0, "accept"), ()
    image = prepare_for_ocr(crop, config.ocr_height_px)
    result = engine.read_line(image) if image is not None else None
    raw = result.text if result else ""
    text = clean_text(raw)
    if len(text.replace(" ", "")) < 2:
        return FieldReading("", raw, 0.0, "reject"), ("name_unreadable",)
    conf = result.confidence if result else 0.0
    value = ledger_form(text)
    if conf >= config.accept_confidence:
        return FieldReading(value, raw, conf, "accept"), ()
    if conf < config.reject_confidence:
        return FieldReading(value, raw, conf, "reject"), ("name_unreadable",)
    return FieldReading(value, raw, conf, "review"), ("name_low_conf",)
