"""The program dashboard's charts: for each row of a table, the share of its total that one
column holds (visits completed in their window, texts delivered), as horizontal bars drawn
by pygal and served as inline SVG.

Only published figures are drawn: a row whose cell or total is hidden ("<11", "*") has no
bar and its label says "not shown", so a chart never tells more than its table. The
drawing is cleaned of what pygal adds for browsers (its script, its style sheet, comments
and the generation date): nothing runs, nothing comes from another host, the page's
Content-Security-Policy has nothing to refuse, and the same figures give the same SVG.

This is the smallest adapter the program figures need until the shared chart module
(`reporting.charts`, the outcome dashboard's) is merged; drawings are cached in the
process by their figures (the same figures always give the same drawing)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import lru_cache

import pygal
from markupsafe import Markup

from reporting.program_report import Table

SVG = "http://www.w3.org/2000/svg"
BAR_COLOUR = "#1f6f8b"  # 5.6:1 against white (WCAG 1.4.11 asks 3:1)
TEXT_COLOUR = "#1f2933"
AXIS_COLOUR = "#7b8794"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def share_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    table: Table,
    column: str,
    row_labels: dict[str, str],
    hidden_text: str,
) -> Markup:
    """The share of `column` in each row's total, one bar per row (top to bottom as the
    table's rows), with the percentage in the row's label."""
    assert table.figures is not None
    index = table.columns.index(column)
    bars: list[tuple[str, float | None]] = []
    for row, cells, total in zip(
        table.rows, table.figures.cells, table.figures.row_totals, strict=True
    ):
        part, whole = cells[index].number, total.number
        label = row_labels.get(row, row)
        if part is None or whole is None or whole == 0:
            bars.append((f"{label}: {hidden_text}", None))
        else:
            share = round(100 * part / whole)
            bars.append((f"{label}: {share}%", float(share)))
    return Markup(_draw(chart_id, title, description, tuple(bars)))  # noqa: S704 (escaped XML)


@lru_cache(maxsize=256)
def _draw(
    chart_id: str, title: str, description: str, bars: tuple[tuple[str, float | None], ...]
) -> str:
    chart = pygal.HorizontalBar(
        js=[],
        css=[],
        no_prefix=True,
        disable_xml_declaration=True,
        explicit_size=False,
        show_legend=False,
        width=480,
        height=60 + 40 * max(len(bars), 1),
        range=(0, 100),
        margin_left=40,
        label_font_size=15,
        major_label_font_size=15,
        truncate_label=-1,
        show_x_guides=False,
        show_y_guides=False,
        show_x_labels=False,
        print_values=False,
    )
    ordered = list(reversed(bars))  # pygal draws the first label at the bottom
    chart.x_labels = [label for label, _value in ordered]
    chart.add("", [value for _label, value in ordered])
    root = chart.render_tree()
    for parent in list(root.iter()):
        for child in list(parent):
            local = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
            classes = (child.get("class") or "").split()
            if (
                not isinstance(child.tag, str)
                or local in ("script", "style", "title", "desc")
                or "tooltip-overlay" in classes
            ):
                parent.remove(child)
    for element in root.iter():
        element.attrib.pop("style", None)
        if not isinstance(element.tag, str):
            continue
        local = element.tag.rsplit("}", 1)[-1]
        classes = set((element.get("class") or "").split())
        if local == "rect" and "background" in classes:
            element.set("fill", "none")
        elif local == "g" and "series" in classes:
            element.set("fill", BAR_COLOUR)
        elif local == "path" and "line" in classes:
            element.set("fill", "none")
            element.set("stroke", AXIS_COLOUR)
        elif local == "text":
            element.set("fill", TEXT_COLOUR)
    for axis in root.iter():
        if isinstance(axis.tag, str) and "y" in (axis.get("class") or "").split():
            for text in axis.iter():
                if isinstance(text.tag, str) and text.tag.endswith("text"):
                    text.set("text-anchor", "end")
    root.set("role", "img")
    root.set("aria-labelledby", f"{chart_id}-title {chart_id}-desc")
    root.set("id", chart_id)
    root.set("class", "chart")
    root.set("font-family", FONT)
    heading = ET.Element(f"{{{SVG}}}title", {"id": f"{chart_id}-title"})
    heading.text = title
    desc = ET.Element(f"{{{SVG}}}desc", {"id": f"{chart_id}-desc"})
    desc.text = description
    root.insert(0, desc)
    root.insert(0, heading)
    root.attrib.pop("xmlns", None)
    ET.register_namespace("", SVG)
    return ET.tostring(root, encoding="unicode", short_empty_elements=True)
