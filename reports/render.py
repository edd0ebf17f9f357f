"""Report tables: typed cells with footnotes, rendered to md / tex / csv by pandas.

A `Table` keeps raw values (floats at full precision, for csv) and per-column display formats
(for md and tex); a `Cell` carries footnote numbers. Rendering builds one DataFrame of display
strings and lets pandas (tabulate for markdown, the Styler for LaTeX) lay it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Cell:
    value: Any
    notes: tuple[int, ...] = ()


@dataclass
class Table:
    """A table with typed columns; `fmt` maps a column to a format spec (or "si")."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    fmt: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> int:
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1

    def add(self, **cells: Any) -> None:
        unknown = set(cells) - set(self.columns)
        assert not unknown, unknown
        self.rows.append([cells.get(c) for c in self.columns])

    def value(self, row: int, col: str) -> Any:
        c = self.rows[row][self.columns.index(col)]
        return c.value if isinstance(c, Cell) else c

    def find(self, **match: Any) -> list[int]:
        return [
            i for i in range(len(self.rows)) if all(self.value(i, k) == v for k, v in match.items())
        ]

    # -- rendering

    def _text(self, col: str, cell: Any) -> str:
        val = cell.value if isinstance(cell, Cell) else cell
        if val is None:
            return ""
        if isinstance(val, float):
            spec = self.fmt.get(col, ".4g")
            return _si(val) if spec == "si" else format(val, spec)
        return str(val)

    def _frame(self, esc: Callable[[str], str],
               marker: Callable[[tuple[int, ...]], str]) -> pd.DataFrame:
        """Display strings (escaped, with footnote markers) in a DataFrame."""
        data = []
        for row in self.rows:
            out = []
            for col, cell in zip(self.columns, row):
                notes = cell.notes if isinstance(cell, Cell) else ()
                out.append(esc(self._text(col, cell)) + (marker(notes) if notes else ""))
            data.append(out)
        return pd.DataFrame(data, columns=[esc(c) for c in self.columns], dtype=object)

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        df = self._frame(esc, lambda n: " [" + ",".join(map(str, n)) + "]")
        body = df.to_markdown(index=False, tablefmt="pipe", disable_numparse=True,
                              stralign="left") if self.rows else _empty_md(df.columns)
        out = [f"**{esc(self.title)}**", "", body]
        if self.notes:
            out.append("")
            out += [f"[{i}] {esc(t)}  " for i, t in enumerate(self.notes, 1)]
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        df = self._frame(_tex, lambda n: rf"$^{{{','.join(map(str, n))}}}$")
        align = "".join("r" if i and self._numeric(c) else "l" for i, c in enumerate(self.columns))
        tex = df.style.hide(axis="index").to_latex(
            column_format=align, hrules=True, caption=_tex(self.title), position="t")
        tex = tex.replace("\\begin{table}[t]\n", "\\begin{table}[t]\n\\centering\n\\small\n", 1)
        if self.notes:
            foot = ["\\par\\footnotesize"] + [rf"$^{{{i}}}$ {_tex(t)}\\"
                                              for i, t in enumerate(self.notes, 1)]
            tex = tex.replace("\\end{table}", "\n".join(foot) + "\n\\end{table}")
        return tex

    def _numeric(self, col: str) -> bool:
        vals = [r[self.columns.index(col)] for r in self.rows]
        vals = [v.value if isinstance(v, Cell) else v for v in vals]
        return any(isinstance(v, float) for v in vals)

    def to_csv(self) -> str:
        """Full-precision values; footnotes go to a trailing `notes` column."""
        data = []
        for row in self.rows:
            vals, notes = [], []
            for cell in row:
                v, n = (cell.value, cell.notes) if isinstance(cell, Cell) else (cell, ())
                vals.append("" if v is None else repr(v) if isinstance(v, float) else v)
                notes += [self.notes[i - 1] for i in n if self.notes[i - 1] not in notes]
            data.append(vals + ["; ".join(notes)])
        df = pd.DataFrame(data, columns=self.columns + ["notes"], dtype=object)
        return df.to_csv(index=False, lineterminator="\n")

    def to_frame(self) -> pd.DataFrame:
        """Raw values (None for blanks), for programmatic use."""
        return pd.DataFrame([[self.value(i, c) for c in self.columns]
                             for i in range(len(self.rows))], columns=self.columns)


def _empty_md(columns: Any) -> str:
    return "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|"


def _tex(s: str) -> str:
    """Escape LaTeX specials (backslash first, via a placeholder, so braces stay escaped)."""
    s = (
        s.replace("\\", "\0")
        .replace("{", r"\{")
        .replace("}", r"\}")
        .replace("\0", r"\textbackslash{}")
    )
    for a, b in (
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("~", r"\~{}"),
        ("^", r"\^{}"),
    ):
        s = s.replace(a, b)
    return s


def _si(v: float) -> str:
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"
