"""Rendering a document as GitHub-flavoured Markdown."""

from __future__ import annotations

from collections.abc import Sequence

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

TEXT_SPECIALS = "\\`*<|"
LINK_TEXT_SPECIALS = TEXT_SPECIALS + "[]"


def _escape(text: str, chars: str = TEXT_SPECIALS) -> str:
    for char in chars:
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines())


def inline(parts: Text) -> str:
    """One line of Markdown for inline parts (``|`` escaped, so it fits in a table cell)."""
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"`{part.text.replace('`', '')}`".replace("|", "\\|"))
        elif isinstance(part, Link):
            text = _escape(part.text, LINK_TEXT_SPECIALS)
            out.append(f"[{text}]({part.target.replace(' ', '%20')})")
        elif isinstance(part, Alert):
            out.append(f"**{_escape(part.text)}**")
        else:
            out.append(_escape(part))
    return "".join(out)


def _table(table: Table) -> list[str]:
    align = ["---:" if i in table.right else "---" for i in range(len(table.header))]
    lines = [
        "| " + " | ".join(_escape(h) for h in table.header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(inline(cell) for cell in row) + " |" for row in table.rows]
    return lines


def _block(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + _escape(block.text)]
    if isinstance(block, Paragraph):
        return [inline(block.parts)]
    if isinstance(block, Bullets):
        return ["- " + inline(item) for item in block.items]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return [f"[![{_escape(block.alt, LINK_TEXT_SPECIALS)}]({block.png})]({block.svg})"]
    if isinstance(block, Collapsed):
        return []
    raise TypeError(f"not a document block: {block!r}")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The document as Markdown: blocks separated by blank lines, ending with a newline."""
    return "\n\n".join("\n".join(lines) for lines in map(_block, blocks) if lines) + "\n"
