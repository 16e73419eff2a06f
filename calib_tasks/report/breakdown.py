"""Breakdowns of top-label records by a field they carry: MMLU per category and per subject,
T-REx per relation. Each group's numbers are computed on that group's records alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import calib_metrics as cm

# Fields to break down by, in the order their tables appear.
BREAKDOWN_FIELDS = ("category", "subject", "relation")


@dataclass(frozen=True)
class BreakdownRow:
    """The numbers of one group of records (``group`` is the field's value)."""

    group: str
    n: int
    acc: float
    mean_confidence: float
    ece: float


def breakdown_fields(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The fields of ``BREAKDOWN_FIELDS`` that every record carries."""
    return [f for f in BREAKDOWN_FIELDS if records and all(f in r for r in records)]


def breakdown(
    records: Sequence[Mapping[str, Any]], field: str, *, n_bins: int, strategy: str
) -> list[BreakdownRow]:
    """One row per value of ``field`` (sorted by value), ECE with the report's binning."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        groups[str(record[field])].append(record)
    rows = []
    for group in sorted(groups):
        members = groups[group]
        confidence = np.fromiter((r["confidence"] for r in members), float, len(members))
        correct = np.fromiter((r["correct"] for r in members), float, len(members))
        rows.append(
            BreakdownRow(
                group=group,
                n=len(members),
                acc=float(correct.mean()),
                mean_confidence=float(confidence.mean()),
                ece=float(cm.ece(confidence, correct, n_bins=n_bins, strategy=strategy)),
            )
        )
    return rows
