"""Tables the CLI prints, complete at any width: no variant name or number is ever cut.

A wide table (the bench's comparison has fourteen columns) does not fit a 100-column terminal.
Rich would then shrink its columns and fold or crop cells, turning ``1,234,567`` into
``1,234,…``. ``print_table`` instead:

- on a terminal: prints the table whole when it fits; else names each row by a short key
  (``A``, ``B``, ...) with a legend underneath, and splits the columns into as many tables as
  it takes, each within the terminal's width, every cell on one line;
- elsewhere (logs, CI, a pipe): prints it the same way at a fixed width of
  ``FIXED_WIDTH`` columns, whatever width the console assumes, every line in full (never
  cropped), so a log reads the same everywhere. ``markdown_lines`` gives the plain Markdown.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

# one space of padding either side of a cell, one border per column, one closing border
_PER_COLUMN = 3
FIXED_WIDTH = 100  # columns of a table printed where there is no terminal
_SHORT = 14  # row names up to this wide stay in every split table; longer ones get keys


@dataclass
class TextTable:
    """A table of ready-formatted cells; the first column names the row (a variant, a step)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    left: set[str] = field(default_factory=set)  # columns aligned left; the rest right
    notes: list[str] = field(default_factory=list)  # lines printed under the table

    def markdown_lines(self) -> list[str]:
        align = ["---" if c in self.left or i == 0 else "---:" for i, c in enumerate(self.columns)]
        lines = [f"**{self.title}**", ""] if self.title else []
        lines += [
            "| " + " | ".join(self.columns) + " |",
            "| " + " | ".join(align) + " |",
            *["| " + " | ".join(row) + " |" for row in self.rows],
        ]
        return lines + ([""] + self.notes if self.notes else [])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not console.is_terminal:  # print_table never crops these; a narrow console may
            yield from map(Text, fixed_width_lines(self))
            return
        yield from fitted(self, options.max_width)


def _width(cells: list[str]) -> int:
    return max(cell_len(c) for c in cells) + _PER_COLUMN


def _rich(table: TextTable, title: str, columns: list[int], rows: list[list[str]]) -> Table:
    out = Table(title=title)
    for i in columns:
        name = table.columns[i]
        if i == 0 or name in table.left:  # text: wrapped (folded) if it must, never cut
            out.add_column(name, justify="left", overflow="fold")
        else:  # numbers: one line each
            out.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        out.add_row(*[row[i] for i in columns])
    return out


def _keys(n: int) -> list[str]:
    letters = string.ascii_uppercase
    return [letters[i] if n <= len(letters) else str(i + 1) for i in range(n)]


def fitted(table: TextTable, width: int) -> list:
    """Renderables for a terminal ``width`` columns wide: the table whole where it fits, else
    keyed rows, a legend and the columns split over several tables."""
    columns = list(range(len(table.columns)))
    widths = [_width([table.columns[i], *[r[i] for r in table.rows]]) for i in columns]
    if sum(widths) + 1 <= width:
        return [_rich(table, table.title, columns, table.rows), *map(Text, table.notes)]
    names = [r[0] for r in table.rows]
    short = max(map(cell_len, names), default=0) <= _SHORT
    keys = names if short else _keys(len(table.rows))
    rows = [[k, *r[1:]] for k, r in zip(keys, table.rows, strict=True)]
    key_width = _width([table.columns[0], *keys])
    groups: list[list[int]] = [[]]
    used = key_width + 1
    for i in columns[1:]:
        if groups[-1] and used + widths[i] > width:
            groups.append([])
            used = key_width + 1
        groups[-1].append(i)
        used += widths[i]
    out = []
    for n, group in enumerate(groups, 1):
        title = f"{table.title} ({n}/{len(groups)})" if len(groups) > 1 else table.title
        out.append(_rich(table, title, [0, *group], rows))
    if short:
        return [*out, *map(Text, table.notes)]
    legend = [f"{k} = {r[0]}" for k, r in zip(keys, table.rows, strict=True)]
    return [*out, Text(f"{table.columns[0]}:"), *map(Text, legend), *map(Text, table.notes)]


def fixed_width_lines(table: TextTable, width: int = FIXED_WIDTH) -> list[str]:
    """``table`` fitted to ``width`` columns, as plain text lines (no colour, no markup)."""
    from io import StringIO

    out = StringIO()
    plain = Console(file=out, width=width, force_terminal=False, color_system=None)
    for part in fitted(table, width):
        plain.print(part)
    return out.getvalue().rstrip("\n").splitlines()


def print_table(console: Console, table: TextTable) -> None:
    """Print ``table`` complete: fitted to a terminal, or at ``FIXED_WIDTH`` elsewhere, its
    lines never wrapped or cropped by a narrower console."""
    if console.is_terminal:
        for part in fitted(table, console.width):
            console.print(part)
        return
    for line in fixed_width_lines(table):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def percent(x: float | None) -> str:
    """A fraction as a percentage with two decimals; ``n/a`` when it was not measured."""
    return "n/a" if x is None else f"{100 * x:.2f}%"
