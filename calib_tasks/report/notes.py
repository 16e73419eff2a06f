"""Messages for the reader of a report: echoed on stderr at once and kept for summary.md."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Notes:
    """An ordered list of messages; each is also written to stderr (above a progress bar)."""

    def __init__(self, echo: bool = True) -> None:
        self.messages: list[str] = []
        self._echo = echo

    def add(self, message: str) -> None:
        """Keep ``message`` and, when echoing, write it to stderr as ``calib-report: message``."""
        self.messages.append(message)
        if self._echo:
            tqdm.write(f"calib-report: {message}", file=sys.stderr)
