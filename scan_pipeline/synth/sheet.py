"""Lay out and draw the printed sheet of a template: petition text, grid blocks, legal notice.

Used for `sheet blank` (the sheet a group prints) and by the sample generator, which varies the
style (scale, margins, column widths, row heights) the way sheets printed by many groups vary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from scan_pipeline.core.errors import OutputError
from scan_pipeline.core.fonts import font_path
from scan_pipeline.core.records import Box
from scan_pipeline.core.template import Span, Template

MM_PER_INCH = 25.4

@lru_cache(maxsize=64)
def _font(style: str, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(style), size_px)


@dataclass(frozen=True)
class SheetStyle:
    """How one group printed the sheet. The default is the template as designed."""

    scale: float = 1.0  # the whole page content, as printers' "fit to page" does
    margin_left_mm: float | None = None  # None: the template's margin
    margin_top_mm: float | None = None
    column_widths: tuple[float, ...] | None = None  # shares of the grid width, None: template's
    row_height_factor: float = 1.0
    text_pt: float = 9.0
    line_px: float = 0.35  # ruled line thickness, mm


@dataclass(frozen=True)
class BlockLayout:
    rows: tuple[int, ...]  # printed row numbers
    header: tuple[Box, ...]  # header cell boxes, per column
    cells: tuple[tuple[Box, ...], ...]  # per row, per column: boxes inside the ruled lines


@dataclass(frozen=True)
class PageLayout:
    page: int
    size_px: tuple[int, int]
    dpi: float
    blocks: tuple[BlockLayout, ...] = field(default_factory=tuple)


def _px(mm: float, dpi: float) -> int:
    return int(round(mm / MM_PER_INCH * dpi))


def _wrap(paragraph: tuple[Span, ...], size_px: int, width_px: int) -> list[list[tuple[str, bool]]]:
    """Greedy word wrap of a paragraph made of regular and bold spans."""
    words = [(w, s.bold) for s in paragraph for w in s.text.split()]
    lines: list[list[tuple[str, bool]]] = [[]]
    x = 0.0
    space = _font("regular", size_px).getlength(" ")
    for word, bold in words:
        w = _font("bold" if bold else "regular", size_px).getlength(word)
        if lines[-1] and x + space + w > width_px:
            lines.append([])
            x = 0.0
        x += (space if lines[-1] else 0) + w
        lines[-1].append((word, bold))
    return lines


def render_page(template: Template, page: int, dpi: float = 300.0,
                style: SheetStyle = SheetStyle()) -> tuple[Image.Image, PageLayout]:
    """Draw one blank page of the sheet; return it (mode L) and where its cells are."""
    paper_w, paper_h = template.paper_mm
    size = (_px(paper_w, dpi), _px(paper_h, dpi))
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    s = style.scale
    margin_l = style.margin_left_mm if style.margin_left_mm is not None else template.margin_mm
    margin_t = style.margin_top_mm if style.margin_top_mm is not None else template.margin_mm
    # Scaled content is centred on the paper, as printing at a reduced size does.
    x0 = _px(margin_l * s + paper_w * (1 - s) / 2, dpi)
    content_w = _px((paper_w - 2 * template.margin_mm) * s, dpi)
    y = _px(margin_t * s + paper_h * (1 - s) / 2, dpi)
    bottom = size[1] - _px(template.margin_mm * s + paper_h * (1 - s) / 2, dpi)
    text_px = max(8, _px(style.text_pt * 0.3528 * s, dpi))
    line_w = max(1, _px(style.line_px * s, dpi))
    widths = style.column_widths or tuple(c.width for c in template.columns)
    widths = tuple(w / sum(widths) for w in widths)
    sheet_page = template.pages[page - 1]

    # The grid gets what the text leaves; rows shrink if a style would push it off the paper.
    text_h = 0
    for item in sheet_page.content:
        if item.kind == "title":
            text_h += int(len(_wrap((Span(item.text, True),), int(text_px * 1.3), content_w)) * text_px * 1.3 * 1.25)
            text_h += text_px
        elif item.kind == "text":
            for para in item.paragraphs:
                text_h += int(len(_wrap(para, text_px, content_w)) * text_px * 1.3) + int(text_px * 0.8)
    n_rows = sum(len(item.rows) for item in sheet_page.content if item.kind == "grid")
    n_grids = sum(1 for item in sheet_page.content if item.kind == "grid")
    header_h = _px(template.header_height_mm * s, dpi)
    row_h = _px(template.row_height_mm * s * style.row_height_factor, dpi)
    room = bottom - y - text_h - n_grids * (header_h + text_px * 2)
    if n_rows and row_h * n_rows > room:
        row_h = room // n_rows

    blocks = []
    for item in sheet_page.content:
        if item.kind == "title":
            size_px = int(text_px * 1.3)
            for line in _wrap((Span(item.text, True),), size_px, content_w):
                draw.text((x0, y), " ".join(w for w, _ in line), font=_font("bold", size_px), fill=0)
                y += int(size_px * 1.25)
            y += text_px
        elif item.kind == "text":
            for para in item.paragraphs:
                for line in _wrap(para, text_px, content_w):
                    x = float(x0)
                    for word, bold in line:
                        font = _font("bold" if bold else "regular", text_px)
                        draw.text((x, y), word, font=font, fill=0)
                        x += font.getlength(word + " ")
                    y += int(text_px * 1.3)
                y += int(text_px * 0.8)
        else:
            y += text_px
            blocks.append(_draw_grid(draw, template, item.rows, x0, y, content_w, widths,
                                     header_h, row_h, line_w, text_px))
            y += header_h + row_h * len(item.rows) + text_px
    return img, PageLayout(page=page, size_px=size, dpi=dpi, blocks=tuple(blocks))


def _draw_grid(draw: ImageDraw.ImageDraw, template: Template, rows: tuple[int, ...], x0: int, y0: int,
               width: int, widths: tuple[float, ...], header_h: int, row_h: int, line_w: int,
               text_px: int) -> BlockLayout:
    xs = [x0]
    for w in widths:
        xs.append(xs[-1] + int(round(w * width)))
    ys = [y0, y0 + header_h] + [y0 + header_h + row_h * (i + 1) for i in range(len(rows))]
    for yy in ys:
        draw.rectangle([xs[0], yy - line_w // 2, xs[-1], yy - line_w // 2 + line_w - 1], fill=0)
    for xx in xs:
        draw.rectangle([xx - line_w // 2, ys[0], xx - line_w // 2 + line_w - 1, ys[-1]], fill=0)
    half = line_w - line_w // 2

    def cell(i: int, y_top: int, y_bottom: int) -> Box:
        return Box(xs[i] + half, y_top + half, xs[i + 1] - line_w // 2, y_bottom - line_w // 2)

    header = tuple(cell(i, ys[0], ys[1]) for i in range(len(widths)))
    head_font = _font("bold", text_px)
    for col, box in zip(template.columns, header):
        if col.header:
            tw = head_font.getlength(col.header)
            draw.text(((box.x0 + box.x1 - tw) / 2, (box.y0 + box.y1 - text_px) / 2 - 1), col.header,
                      font=head_font, fill=0)
    num_font = _font("regular", text_px)
    cells = []
    for r, number in enumerate(rows):
        boxes = tuple(cell(i, ys[r + 1], ys[r + 2]) for i in range(len(widths)))
        label = str(number)
        b = boxes[0]
        draw.text(((b.x0 + b.x1 - num_font.getlength(label)) / 2, (b.y0 + b.y1 - text_px) / 2 - 1), label,
                  font=num_font, fill=0)
        cells.append(boxes)
    return BlockLayout(rows=rows, header=header, cells=tuple(cells))


def write_blank_sheet(template: Template, out: Path, dpi: float = 300.0) -> int:
    """Write the empty sheet, every page, as one PDF ready to print. Returns the page count."""
    pages = [render_page(template, p.page, dpi)[0].convert("1", dither=Image.Dither.NONE)
             for p in template.pages]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        pages[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=pages[1:],
                      title=f"Petition sheet ({template.id})")
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}",
                          hint="choose a folder you can write to") from exc
    return len(pages)
