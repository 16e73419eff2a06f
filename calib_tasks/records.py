"""The per-sample record that every calib task's ``process_results`` emits, and its pooling.

A task returns the same record under every calibration key (``metric_values``); each key's
aggregation reduces the list of records of the whole task, so every metric is computed on the
pooled samples (never as an average of per-subject or per-document values). Records are plain
JSON-friendly dicts. ``--log_samples`` writes each metric key's value on the sample's line, so the
record itself goes under ``RECORD_KEY`` ("ece") only and the other keys hold a ``SharedRecord``
that the harness writes as a short string: a line carries one copy of the record, from which
``calib-report`` recomputes everything.

Two kinds:

* top-label: ``{"confidence": float, "correct": 0|1, ...extras}`` for one prediction (an MMLU
  question, a fact); extras may hold ``probs`` (all option probabilities), ``label`` (gold index)
  and any breakdown key such as ``subject`` or ``relation``.
* histogram: ``{"histogram": ConfidenceHistogram.to_dict(), ...extras}`` for the many token
  predictions of one document; bootstrap intervals then resample whole documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calib_metrics import ConfidenceHistogram

RECORD_KEY = "ece"


class SharedRecord:
    """A reference to the record under ``RECORD_KEY``; the samples file shows only its repr."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def __repr__(self) -> str:
        return f"<calib record: see {RECORD_KEY!r}>"


def metric_values(record: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``record`` under ``RECORD_KEY`` (which must be among ``keys``), a reference elsewhere."""
    if RECORD_KEY not in keys:
        raise ValueError(f"the calibration keys {list(keys)} must include {RECORD_KEY!r}")
    return {key: record if key == RECORD_KEY else SharedRecord(record) for key in keys}


def unwrap_records(records: Sequence[Any]) -> list[Any]:
    """The records themselves, ``SharedRecord`` references replaced by what they refer to."""
    return [r.record if isinstance(r, SharedRecord) else r for r in records]


def top_label_record(confidence: float, correct: bool, **extras: Any) -> dict[str, Any]:
    """One prediction: ``confidence`` in [0, 1] and whether it was right, plus extras."""
    if not 0.0 <= confidence <= 1.0:  # also rejects NaN
        raise ValueError(f"confidence must lie in [0, 1], got {confidence!r}")
    return {"confidence": float(confidence), "correct": int(bool(correct)), **extras}


def histogram_record(histogram: ConfidenceHistogram, **extras: Any) -> dict[str, Any]:
    """Many token predictions of one document, as sufficient statistics."""
    return {"histogram": histogram.to_dict(), **extras}


@dataclass(frozen=True)
class PooledTopLabel:
    """The pooled top-label samples of a task; ``probs``/``labels`` when every record has them."""

    confidence: np.ndarray
    correct: np.ndarray
    probs: np.ndarray | None
    labels: np.ndarray | None


def pool_top_label(records: Sequence[Any]) -> PooledTopLabel:
    """Stack top-label records into arrays (probabilities only if all records carry them)."""
    records = unwrap_records(records)
    _require_kind(records, "confidence")
    confidence = np.fromiter((r["confidence"] for r in records), float, len(records))
    correct = np.fromiter((r["correct"] for r in records), float, len(records))
    if all("probs" in r and "label" in r for r in records):
        probs = np.asarray([r["probs"] for r in records], dtype=float)
        labels = np.fromiter((r["label"] for r in records), int, len(records))
        return PooledTopLabel(confidence, correct, probs, labels)
    return PooledTopLabel(confidence, correct, None, None)


def pool_histograms(records: Sequence[Any]) -> list[ConfidenceHistogram]:
    """One histogram per histogram record (a document), in order."""
    records = unwrap_records(records)
    _require_kind(records, "histogram")
    return [ConfidenceHistogram.from_dict(r["histogram"]) for r in records]


def is_histogram_list(records: Sequence[Any]) -> bool:
    """Whether the records are histogram records (checked on the first; pooling checks all)."""
    if not records:
        raise ValueError("no samples to aggregate: the task produced no records")
    return "histogram" in unwrap_records(records[:1])[0]


def _require_kind(records: Sequence[dict[str, Any]], key: str) -> None:
    if not records:
        raise ValueError("no samples to aggregate: the task produced no records")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or key not in record:
            raise ValueError(
                f"sample {i} is not a {key!r} record (got {str(record)[:80]}); "
                "a calib aggregation needs the records of calib_tasks.records"
            )
