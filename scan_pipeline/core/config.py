"""Thresholds, in one bundled TOML file a user can override with --config."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from scan_pipeline.core.errors import ConfigError


@dataclass(frozen=True)
class CellsConfig:
    margin: float
    speck_px: float
    # whether a cell holds writing (writing.cell_writing)
    paper_px: float
    stroke_contrast: float
    noise_sigmas: float
    mark_px: float
    writing_px: float
    mark_contrast: float
    line_thickness: float
    line_edge: float
    line_degrees: float
    fold_contrast: float
    fold_px: float
    region_share: float
    dense_px: float
    dense_share: float
    porous_holes: float
    faint_visible: float


@dataclass(frozen=True)
class NamesConfig:
    accept_confidence: float
    reject_confidence: float
    ocr_height_px: int
    max_candidates: int
    prior_weight: float
    agree_bonus: float
    split_penalty: float
    word_gap: float
    word_gap_contrast: float
    space_margin: float
    gap_space_weight: float


@dataclass(frozen=True)
class PostalConfig:
    accept_confidence: float
    accept_corrected_confidence: float
    max_corrected_digits: int
    reject_confidence: float
    ocr_height_px: int


@dataclass(frozen=True)
class SignatureConfig:
    signed_ink: float
    strike_length: float
    strike_max_degrees: float
    strike_gap: float
    strike_thickness: float
    strike_max_band: float


@dataclass(frozen=True)
class DedupConfig:
    certain_score: float
    possible_score: float
    prefilter_margin: float
    max_code_digits: int
    max_candidates_listed: int
    retake_min_rows: int
    retake_share: float


@dataclass(frozen=True)
class BatchConfig:
    flush_seconds: float
    pages_in_flight_per_worker: float


@dataclass(frozen=True)
class Config:
    cells: CellsConfig
    names: NamesConfig
    postal: PostalConfig
    signature: SignatureConfig
    dedup: DedupConfig
    batch: BatchConfig


def _bundled() -> dict[str, Any]:
    return tomllib.loads(resources.files("scan_pipeline").joinpath("data/config.toml").read_text("utf-8"))


def _merge(base: dict[str, Any], override: dict[str, Any], origin: str) -> dict[str, Any]:
    problems = []
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in override.items():
        if section not in base:
            problems.append(f"[{section}]: unknown section (known: {', '.join(base)})")
            continue
        if not isinstance(values, dict):
            problems.append(f"{section}: must be a [section]")
            continue
        for key, value in values.items():
            if key not in base[section]:
                problems.append(f"[{section}] {key}: unknown key (known: {', '.join(base[section])})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"[{section}] {key}: must be a number, not {value!r}")
            elif value < 0:
                problems.append(f"[{section}] {key}: must not be negative")
            else:
                merged[section][key] = value
    if problems:
        raise ConfigError(f"{origin} is not a valid config:\n  " + "\n  ".join(problems),
                          hint="compare it with the bundled config (`scan-pipeline config show`)")
    return merged


def _build(data: dict[str, Any]) -> Config:
    def section(cls: type, name: str) -> Any:
        # field types are strings here (postponed annotations)
        return cls(**{f.name: int(data[name][f.name]) if f.type == "int" else float(data[name][f.name])
                      for f in fields(cls)})

    return Config(section(CellsConfig, "cells"), section(NamesConfig, "names"),
                  section(PostalConfig, "postal"), section(SignatureConfig, "signature"),
                  section(DedupConfig, "dedup"), section(BatchConfig, "batch"))


@lru_cache(maxsize=1)
def default_config() -> Config:
    return _build(_bundled())


def bundled_config_text() -> str:
    return resources.files("scan_pipeline").joinpath("data/config.toml").read_text("utf-8")


def load_config(path: str | Path | None = None) -> Config:
    if path is None:
        return default_config()
    path = Path(path)
    try:
        override = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return _build(_merge(_bundled(), override, str(path)))
