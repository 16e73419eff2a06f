"""A tiny document model: what the commands write as Markdown (summary.md, study.md,
comparison.md) and as HTML (report.html), so that both forms of a document say the same thing.

A document is a list of blocks; text inside a block is a sequence of inline parts (plain
strings, ``Code``, ``Link`` and ``Alert``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """Inline code (a task name, a path)."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link to a file next to the document (relative to it); in HTML it goes to ``anchor``,
    the embedded copy, when there is one."""

    text: str
    target: str
    anchor: str | None = None


@dataclass(frozen=True)
class Alert:
    """Text the reader must not miss: a marker such as ``INCOMPLETE: 5 of 20 samples`` (bold
    in Markdown, bold and red in HTML)."""

    text: str


Inline = str | Code | Link | Alert
Text = Sequence[Inline]


@dataclass(frozen=True)
class Heading:
    """A section heading; ``anchor`` is its id in HTML."""

    text: str
    level: int
    anchor: str


@dataclass(frozen=True)
class Paragraph:
    """Running text."""

    parts: Text


@dataclass(frozen=True)
class Bullets:
    """An unordered list."""

    items: Sequence[Text]


@dataclass(frozen=True)
class Table:
    """A table with a header row; columns named in ``right`` are right-aligned (numbers)."""

    header: Sequence[str]
    rows: Sequence[Sequence[Text]]
    right: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Figure:
    """A figure: ``png`` (embedded in an HTML page) and ``svg``, paths relative to the document."""

    png: str
    svg: str
    alt: str


@dataclass(frozen=True)
class Collapsed:
    """Blocks that HTML folds under ``title`` and Markdown leaves out (the Markdown document
    links to a file of their own instead)."""

    title: str
    anchor: str
    blocks: Sequence[Block]


Block = Heading | Paragraph | Bullets | Table | Figure | Collapsed
