"""A `pages.Page` as one self-contained HTML file: the CSS, plotly.js and tracekit's own
canvas renderer of the engine timeline inlined, the figures' numbers in one JSON block (bulk
arrays base64-encoded, little-endian), nothing loaded from the network. Only formats: every
number comes from the page.

The page's script marks the body when it has drawn every figure: data-figures (how many),
data-rendered (how many drew), data-errors (errors caught on the page, also listed at its top).
Same page, same bytes: no time stamps, no random ids.
"""

from __future__ import annotations

import base64
import html
import json
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import polars as pl

import tracekit
from tracekit.report.lanes import Lanes
from tracekit.report.pages import Figure, Kind, Page

DATA_ID = "tracekit-data"
"""The id of the script element holding the figures' numbers (JSON)."""


@cache
def plotly_js() -> str:
    """plotly.js as shipped inside the plotly package (its minified bundle)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text("utf-8")


@cache
def _asset(name: str) -> str:
    return (resources.files("tracekit.report") / "assets" / name).read_text("utf-8")


def array(values: np.ndarray | pl.Series, dtype: str) -> dict[str, str]:
    """A numeric array for the page: {"dtype": "i4"|"u2"|"f8"..., "b64": little-endian
    bytes in base64}."""
    data = np.ascontiguousarray(np.asarray(values).astype(f"<{dtype}"))
    return {"dtype": dtype, "b64": base64.b64encode(data.tobytes()).decode("ascii")}


def _times(values: np.ndarray) -> dict[str, str]:
    """Cycles relative to the window's start: int32 when they fit, else float64."""
    fits = values.size == 0 or (values.min() >= -(2**31) and values.max() < 2**31)
    return array(values, "i4" if fits else "f8")


def lanes_data(lanes: Lanes) -> dict[str, Any]:
    """The engine timeline's numbers as the page's script reads them."""
    out: dict[str, Any] = {"names": lanes.names, "lo": lanes.lo, "hi": lanes.hi,
                           "instructions": lanes.instructions, "opcodes": lanes.opcodes,
                           "layers": lanes.layers}
    if lanes.bars is not None:
        b = lanes.bars
        ids = b["id"].to_numpy()
        out["bars"] = {
            "id": _times(ids) if ids.size == 0 or ids.max() < 2**31 else array(ids, "f8"),
            "start": _times(b["start"].to_numpy() - lanes.lo),
            "end": _times(b["end"].to_numpy() - lanes.lo),
            "lane": array(b["lane"].to_numpy(), "u2"),
            "opcode": array(b["opcode"].to_numpy(), "u2"),
            "layer": array(b["layer"].to_numpy(), "i4")}
    else:
        assert lanes.busy is not None
        out["width"] = lanes.width
        out["bins"] = int(lanes.busy.shape[1])
        out["busy"] = array(lanes.busy.reshape(-1), "f8")
    p = lanes.path
    out["path"] = {"start": _times(p["start"].to_numpy() - lanes.lo),
                   "end": _times(p["end"].to_numpy() - lanes.lo),
                   "lane": array(p["lane"].to_numpy(), "u2")}
    return out


def figure_data(figure: Figure) -> dict[str, Any]:
    """What the script needs to draw `figure`."""
    if figure.kind is Kind.TIMELINE:
        runs = figure.lanes if isinstance(figure.lanes, tuple) else (figure.lanes,)
        labels = ["base", "candidate"] if len(runs) == 2 else [""]
        return {"kind": figure.kind.value,
                "runs": [lanes_data(r) for r in runs if r is not None], "labels": labels}
    return {"kind": figure.kind.value, **figure.spec}


def page_data(page: Page) -> dict[str, Any]:
    """The JSON block of the page: every drawn figure's numbers, by key."""
    return {"figures": {f.key: figure_data(f) for f in page.figures if f.kind is not Kind.TABLE}}


def _script_json(data: Any) -> str:
    """JSON safe inside a script element (no "<" at all)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "link":
        return f'<a href="{html.escape(str(value))}">{html.escape(str(value))}</a>'
    if isinstance(value, list):
        return html.escape(", ".join(str(v) for v in value))
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return html.escape(format(value, fmt))
    return html.escape(str(value))


def _table(spec: dict[str, Any]) -> str:
    columns: list[tuple[str, str]] = [tuple(c) for c in spec["columns"]]  # type: ignore[misc]
    rows: list[dict[str, Any]] = spec["rows"]
    if not rows:
        return '<p class="empty">none</p>'
    head = "".join(f'<th class="{"num" if f and f != "link" else "txt"}">'
                   f"{html.escape(name.replace('_', ' '))}</th>" for name, f in columns)
    body = "".join("<tr>" + "".join(
        f'<td class="{"num" if f and f != "link" else "txt"}">{_cell(row.get(name), f)}</td>'
        for name, f in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(figure: Figure) -> str:
    key = html.escape(figure.key)
    parts = [f'<section class="figure" id="fig-{key}">',
             f"<h2>{html.escape(figure.title)}</h2>"]
    if figure.note:
        parts.append(f'<p class="note">{html.escape(figure.note)}</p>')
    if figure.kind is Kind.TABLE:
        parts.append(f'<div class="table" data-figure="{key}" data-kind="table">'
                     f"{_table(figure.spec)}</div>")
    elif figure.kind is Kind.TIMELINE:
        parts.append(f'<div class="timeline" data-figure="{key}" data-kind="timeline"></div>')
    else:
        parts.append(f'<div class="plot" data-figure="{key}" data-kind="plotly"></div>')
    if figure.command:
        parts.append(f'<p class="reproduce">Same numbers: <code>{html.escape(figure.command)}'
                     f"</code></p>")
    parts.append("</section>")
    return "\n".join(parts)


def page_html(page: Page) -> str:
    """The page as one HTML document."""
    head = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>"
                   for label, text in page.head)
    verdict = "".join(f"<li>{html.escape(line)}</li>" for line in page.verdict)
    toc = "".join(f'<a href="#fig-{html.escape(f.key)}">{html.escape(f.title)}</a>'
                  for f in page.figures)
    links = "".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>'
                    for text, href in page.links)
    title = html.escape(page.title)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="tracekit {html.escape(tracekit.__version__)}">',
        f"<title>{title}</title>",
        f"<style>\n{_asset('report.css')}</style>",
        f"<script>{plotly_js()}</script>",
        "</head>",
        '<body data-rendered="0" data-errors="0">',
        '<pre id="tracekit-errors" hidden></pre>',
        f"<header><h1>{title}</h1>",
        f'<table class="head">{head}</table>',
        f'<ul class="verdict">{verdict}</ul>' if verdict else "",
        f'<ul class="links">{links}</ul>' if links else "",
        f"<nav>{toc}</nav></header>",
        "<main>",
        *(_figure(f) for f in page.figures),
        "</main>",
        f'<script type="application/json" id="{DATA_ID}">{_script_json(page_data(page))}'
        f"</script>",
        f"<script>\n{_asset('report.js')}</script>",
        "</body>",
        "</html>",
        ""])
