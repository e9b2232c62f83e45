"""The program dashboard's charts: for each row of a table, the share of its total that one
column holds (visits completed in their window, texts delivered), drawn by the shared chart
module (`reporting.charts`: pygal, inline SVG, nothing that runs or comes from another
host).

Only published figures are drawn: a row whose cell or total is hidden ("<11", "*") has no
bar and its label says so, so a chart never tells more than its table. Drawings are kept
in the process by their figures (the same figures always give the same SVG), so the busiest
page draws nothing twice."""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup

from reporting.charts import Bar, horizontal_bars
from reporting.program_report import Table


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
    table's rows), the percentage in the row's label."""
    assert table.figures is not None
    index = table.columns.index(column)
    bars: list[Bar] = []
    for row, cells, total in zip(
        table.rows, table.figures.cells, table.figures.row_totals, strict=True
    ):
        part, whole = cells[index].number, total.number
        label = row_labels.get(row, row)
        if part is None or whole is None or whole == 0:
            bars.append(Bar(label, None, hidden_text))
        else:
            share = round(100 * part / whole)
            bars.append(Bar(label, share, f"{share}%"))
    return _drawn(chart_id, title, description, tuple(bars))


@lru_cache(maxsize=512)
def _drawn(chart_id: str, title: str, description: str, bars: tuple[Bar, ...]) -> Markup:
    return horizontal_bars(chart_id=chart_id, title=title, description=description, bars=bars)
