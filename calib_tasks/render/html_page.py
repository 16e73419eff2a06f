"""Rendering a document as one self-contained HTML page (figures embedded as PNG)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from calib_tasks.render.document import (
    Alert,
    Block,
    Bullets,
    Code,
    Collapsed,
    Figure,
    Heading,
    Link,
    Paragraph,
    Table,
    Text,
)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
details { margin: 0.5em 0; }
summary { cursor: pointer; }
strong.alert { color: #b00020; }
"""


def _inline(parts: Text) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"<code>{escape(part.text)}</code>")
        elif isinstance(part, Link):
            href = f"#{part.anchor}" if part.anchor else part.target
            out.append(f'<a href="{escape(href)}">{escape(part.text)}</a>')
        elif isinstance(part, Alert):
            out.append(f'<strong class="alert">{escape(part.text)}</strong>')
        else:
            out.append(escape(part))
    return "".join(out)


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_inline(c)}</td>' if i in table.right else f"<td>{_inline(c)}</td>"
            for i, c in enumerate(row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _figure(figure: Figure, out_dir: Path) -> str:
    data = base64.b64encode((out_dir / figure.png).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.alt)}">'
        f'<figcaption><a href="{escape(figure.svg)}">SVG</a></figcaption></figure>'
    )


def _block(block: Block, out_dir: Path) -> str:
    if isinstance(block, Heading):
        level = min(block.level, 6)
        return f'<h{level} id="{escape(block.anchor)}">{escape(block.text)}</h{level}>'
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.parts)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in block.items) + "\n</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block, out_dir)
    if isinstance(block, Collapsed):
        inner = "\n".join(_block(b, out_dir) for b in block.blocks)
        return (
            f'<details id="{escape(block.anchor)}"><summary>{escape(block.title)}</summary>\n'
            f"{inner}\n</details>"
        )
    raise TypeError(f"not a document block: {block!r}")


def render_html(blocks: Sequence[Block], title: str, out_dir: Path) -> str:
    """The document as a standalone HTML page; PNGs are read from ``out_dir`` and embedded."""
    body = "\n".join(_block(block, out_dir) for block in blocks)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
