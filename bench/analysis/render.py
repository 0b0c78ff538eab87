"""HTML and Markdown building blocks of the report (no template engine: the page is a few sections of tables and
figures, and a dependency-free writer keeps the report renderable with only pandas and matplotlib installed)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

PAGE_WIDTH_PX = 1360
"""Width of the page's content column; figures are drawn at most this wide (figures.PAGE_WIDTH_IN), so the browser
shows them at 1:1 and never shrinks their text."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:%dpx;
     padding:0 1em;color:#222;line-height:1.4}
h1,h2,h3{color:#0b3d62} h2{border-bottom:1px solid #d8e0e8;padding-bottom:.15em;margin-top:1.8em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right} td{white-space:nowrap} th{background:#f0f3f6}
td.long{white-space:normal;min-width:22em;text-align:left}
td:first-child,th:first-child{text-align:left} .note{background:#fff8e1;border-left:4px solid #E69F00;padding:.5em 1em}
.lead{font-size:19px;line-height:1.35;background:#e8f4fb;border-left:5px solid #0072B2;padding:.6em 1em;margin:.6em 0}
.verdict{background:#e8f4fb;border-left:4px solid #0072B2;padding:.5em 1em;font-size:15px}
.meta{font-size:13px;color:#555;margin:.3em 0}
nav.toc{font-size:13px;margin:.8em 0 1.2em} nav.toc a{margin-right:1.1em;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%%}
details{margin:.3em 0} details>summary{cursor:pointer} details>summary>h3{display:inline}
figure{display:inline-table;vertical-align:top;margin:1em 1em 1em 0} img{display:block;max-width:100%%;height:auto}
figcaption{display:table-caption;caption-side:bottom;font-size:12px;color:#555}
.files{font-size:12px}
""" % PAGE_WIDTH_PX


def fmt_value(v: object) -> str:
    """Numbers with 4 significant digits; NaN as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "—" if not np.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(map(str, v))
    return str(v)


def _td(text: str) -> str:
    """A cell; numbers and short texts stay on one line, long texts (lists of problems) wrap."""
    return f"<td class='long'>{html.escape(text)}</td>" if len(text) > 40 else f"<td>{html.escape(text)}</td>"


def html_table(df: pd.DataFrame, index: bool = False, max_rows: int = 400) -> str:
    if df is None or df.empty:
        return "<p><em>(no rows)</em></p>"
    shown = df.head(max_rows)
    if index:
        shown = shown.reset_index()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(_td(fmt_value(v)) for v in row) + "</tr>" for row in shown.itertuples(index=False))
    more = f"<p><em>{len(df) - max_rows} more rows in the CSV.</em></p>" if len(df) > max_rows else ""
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}"


def md_table(df: pd.DataFrame, index: bool = False, max_rows: int = 200) -> str:
    if df is None or df.empty:
        return "_(no rows)_\n"
    shown = df.head(max_rows)
    if index:
        shown = shown.reset_index()

    def cell(v: object) -> str:
        return fmt_value(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in shown.columns) + " |",
             "|" + "|".join("---" for _ in shown.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n_{len(df) - max_rows} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def embedded_figure(path_png: Path, rel_png: str, rel_svg: str, caption: str) -> str:
    """A figure embedded as base64 PNG (the page stays one self-contained file) with links to both files."""
    data = base64.b64encode(path_png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(caption)} — <a href="{rel_png}">{rel_png}</a> · '
            f'<a href="{rel_svg}">{rel_svg}</a></figcaption></figure>')


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def toc(entries: list[tuple[str, str]]) -> str:
    """A one-line table of contents: links to the page's sections, ``(anchor id, heading text)``."""
    links = " ".join(f"<a href='#{html.escape(a)}'>{html.escape(t)}</a>" for a, t in entries)
    return f"<nav class='toc'><strong>Sections:</strong> {links}</nav>"
