"""Reading calib-report's summary.md in tests."""

from __future__ import annotations


def table_rows(summary: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading`` (up to the next heading), as cells."""
    section = summary.split(heading, 1)[1].split("\n#", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ][1:]
