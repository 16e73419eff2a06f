"""Markdown of figures whose alt text holds link syntax (run labels such as ``m [dtype=x]``)."""

from __future__ import annotations

from calib_tasks.render.document import Figure
from calib_tasks.render.markdown import render_markdown


def test_brackets_in_a_figure_alt_text_cannot_end_its_link() -> None:
    text = render_markdown([Figure("a.png", "a.svg", "diagram of m [dtype=x] and x]")])
    assert text == "[![diagram of m \\[dtype=x\\] and x\\]](a.png)](a.svg)\n"
