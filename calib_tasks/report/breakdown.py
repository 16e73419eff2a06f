"""Breakdowns of an entry's one-prediction records by a field they carry: MMLU per category and
per subject, T-REx per relation. Each group's numbers are computed on that group's records alone,
its ECE by the metric table's row with the report's options."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib_tasks.report.entries import ReportOptions
from calib_tasks.scoring.metric_table import metric_named
from calib_tasks.scoring.records import Pool

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


def breakdown_fields(pool: Pool) -> list[str]:
    """The fields of ``BREAKDOWN_FIELDS`` that every record of ``pool`` carries."""
    return [f for f in BREAKDOWN_FIELDS if pool.field_values(f) is not None]


def breakdown(pool: Pool, field: str, options: ReportOptions) -> list[BreakdownRow]:
    """One row per value of ``field`` (which every record carries; sorted by value), the ECE
    with ``options``."""
    values = np.array([str(value) for value in pool.field_values(field) or []])
    rows = []
    for group in sorted(set(values.tolist())):
        members = pool.select(values == group)
        rows.append(
            BreakdownRow(
                group=group,
                n=members.n,
                acc=float(members.correct.mean()),
                mean_confidence=float(members.confidence.mean()),
                ece=float(metric_named("ece").compute[members.kind](members, options)),
            )
        )
    return rows
