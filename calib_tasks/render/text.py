"""Numbers and settings as the commands write them, in tables, captions and figures."""

from __future__ import annotations

import math

import calib_metrics as cm

#: The coverage of every confidence interval shown (``"95%"``): calib_metrics' default level,
#: with which every interval is computed.
LEVEL = f"{cm.DEFAULT_LEVEL * 100:g}%"
_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: an int as it is, a float with ``digits`` decimals, ``n/a`` when
    unknown (None, NaN or infinite)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def ece_with_interval(ece: float, low: float, high: float) -> str:
    """``0.123 [0.080, 0.190]``, or the ECE alone when the interval is unknown."""
    if math.isfinite(low) and math.isfinite(high):
        return f"{fmt(ece)} [{fmt(low)}, {fmt(high)}]"
    return fmt(ece)


def binning_text(n_bins: int, strategy: str) -> str:
    """``"10 equal-width bins"`` and the like."""
    return f"{n_bins} {strategy.replace('_', '-')} bin{'s' if n_bins != 1 else ''}"


def compact_number(value: float) -> str:
    """``70M``, ``1.4B``, ``143k``: a count in the style of model names."""
    for scale, unit in _UNITS:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:g}"
