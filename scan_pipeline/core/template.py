"""Sheet templates: what is printed on a petition sheet, validated against its JSON Schema.

A template names the grid's columns in order, the words that identify them in the header row, and
for each page of the sheet its printed text and printed row numbers. The pipeline never uses the
template's millimetres to find anything on a scan: they only lay out the blank sheet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from scan_pipeline.core.errors import TemplateError

BUNDLED_TEMPLATE = "appel-defenseurs"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    header_words: tuple[str, ...]
    width: float  # share of the grid width


@dataclass(frozen=True)
class Span:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Content:
    kind: str  # "title", "text" or "grid"
    text: str = ""  # title text
    paragraphs: tuple[tuple[Span, ...], ...] = ()  # for "text"
    rows: tuple[int, ...] = ()  # printed row numbers, for "grid"


@dataclass(frozen=True)
class SheetPage:
    page: int
    content: tuple[Content, ...]

    @property
    def grids(self) -> tuple[tuple[int, ...], ...]:
        return tuple(c.rows for c in self.content if c.kind == "grid")


@dataclass(frozen=True)
class Template:
    id: str
    paper_mm: tuple[float, float]
    margin_mm: float
    columns: tuple[Column, ...]
    row_height_mm: float
    header_height_mm: float
    pages: tuple[SheetPage, ...]

    @property
    def column_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.columns)

    @property
    def blocks(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """Every grid block as (sheet page, printed row numbers)."""
        return tuple((p.page, rows) for p in self.pages for rows in p.grids)

    def rows_on_page(self, page: int) -> tuple[int, ...]:
        return tuple(n for p, rows in self.blocks if p == page for n in rows)


@lru_cache(maxsize=1)
def template_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        resources.files("scan_pipeline").joinpath("schemas/template.schema.json").read_text("utf-8")
    )
    return schema


def validation_errors(data: Any) -> list[str]:
    """Every problem in a template document, each with its JSON path."""
    validator = jsonschema.Draft202012Validator(template_schema())
    errors = [f"{e.json_path}: {e.message}" for e in sorted(validator.iter_errors(data), key=lambda e: e.json_path)]
    if errors:
        return errors
    # What a schema cannot say.
    keys = [c["key"] for c in data["columns"]]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        errors.append(f"$.columns: column {key!r} appears more than once")
    for key in ("name", "postal_code", "signature"):
        if key not in keys:
            errors.append(f"$.columns: no {key!r} column")
    total = sum(c["width"] for c in data["columns"])
    if abs(total - 1.0) > 0.01:
        errors.append(f"$.columns: widths add up to {total:.3f}, not 1")
    seen: dict[int, str] = {}
    for i, page in enumerate(data["pages"]):
        if page["page"] != i + 1:
            errors.append(f"$.pages[{i}].page: expected {i + 1}, found {page['page']}")
        for j, item in enumerate(page["content"]):
            where = f"$.pages[{i}].content[{j}]"
            if item["kind"] == "text" and item["name"] not in data["texts"]:
                errors.append(f"{where}.name: no text named {item['name']!r} in $.texts")
            for n in item.get("rows", []):
                if n in seen:
                    errors.append(f"{where}.rows: row {n} is already printed at {seen[n]}")
                seen[n] = where
    if not seen:
        errors.append("$.pages: no page has a grid")
    return errors


def parse_template(data: dict[str, Any], origin: str = "template") -> Template:
    errors = validation_errors(data)
    if errors:
        raise TemplateError(
            f"{origin} is not a valid template ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n  "
            + "\n  ".join(errors),
            hint="fix the listed fields; the format is described in schemas/template.schema.json",
        )
    texts = {name: tuple(tuple(Span(s["text"], s.get("bold", False)) for s in para) for para in paras)
             for name, paras in data["texts"].items()}
    pages = []
    for page in data["pages"]:
        content = []
        for item in page["content"]:
            if item["kind"] == "title":
                content.append(Content("title", text=item["text"]))
            elif item["kind"] == "text":
                content.append(Content("text", paragraphs=texts[item["name"]]))
            else:
                content.append(Content("grid", rows=tuple(item["rows"])))
        pages.append(SheetPage(page["page"], tuple(content)))
    return Template(
        id=data["id"],
        paper_mm=(data["paper"]["width_mm"], data["paper"]["height_mm"]),
        margin_mm=data["paper"]["margin_mm"],
        columns=tuple(Column(c["key"], c["header"], tuple(c["header_words"]), c["width"])
                      for c in data["columns"]),
        row_height_mm=data["row_height_mm"],
        header_height_mm=data["header_height_mm"],
        pages=tuple(pages),
    )


def load_template(path: str | Path | None = None) -> Template:
    """The template at `path`, or the bundled one."""
    if path is None:
        return _bundled_template()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"template {path} does not exist", hint="give the path of a template JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TemplateError(f"template {path} is not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    return parse_template(data, origin=str(path))


@lru_cache(maxsize=1)
def _bundled_template() -> Template:
    ref = resources.files("scan_pipeline").joinpath(f"data/templates/{BUNDLED_TEMPLATE}.json")
    return parse_template(json.loads(ref.read_text("utf-8")), origin=f"bundled template {BUNDLED_TEMPLATE}")
