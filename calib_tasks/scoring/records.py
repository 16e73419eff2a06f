"""The per-sample record that every calib task's ``process_results`` emits, and its pooling.

A task returns the same record under every calibration key (``share_record``); each key's
aggregation reduces the list of records of the whole task, so every metric is computed on the
pooled samples (never as an average of per-subject or per-document values). Records are plain
JSON-friendly dicts. ``--log_samples`` writes each metric key's value on the sample's line, so the
record itself goes under ``RECORD_KEY`` ("ece") only and the other keys hold a ``SharedRecord``,
a short string: a line carries one copy of the record, from which ``calib-report`` recomputes
everything.

Two kinds:

* top-label: ``{"confidence": float, "correct": 0|1, ...extras}`` for one prediction (an MMLU
  question, a fact); extras may hold ``probs`` (all option probabilities), ``label`` (gold index)
  and any breakdown key such as ``subject`` or ``relation``.
* histogram: ``{"histogram": cm.ConfidenceHistogram.to_dict(), ...extras}`` for the many token
  predictions of one document; bootstrap intervals then resample whole documents.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import calib_metrics as cm
from calib_tasks.scoring.confidence_rules import SUM, OptionScores, Rule

RECORD_KEY = "ece"
#: Where a record goes instead under ``--predict_only``, which renames every metric ``bypass``
#: (``Task.override_metric``) and aggregates it to a placeholder.
PREDICT_ONLY_KEY = "bypass"

#: The kinds of record: one prediction; one prediction with every option's probability and the
#: gold index (``probs``, ``label``); the token predictions of one document.
RecordKind = Literal["top_label", "multiclass", "histogram"]
TOP_LABEL: RecordKind = "top_label"
MULTICLASS: RecordKind = "multiclass"
HISTOGRAM: RecordKind = "histogram"


class SharedRecord(str):
    """A reference to the record under ``RECORD_KEY``: to every logger (the samples file, W&B, the
    hub) a plain string, ``"<calib record: see 'ece'>"``; to the aggregations, ``.record``."""

    record: dict[str, Any]

    def __new__(cls, record: dict[str, Any]) -> SharedRecord:
        reference = super().__new__(cls, f"<calib record: see {RECORD_KEY!r}>")
        reference.record = record
        return reference

    def __getnewargs__(self) -> tuple[dict[str, Any]]:  # type: ignore[override]
        return (self.record,)  # pickled (data-parallel gathering) with the record it refers to


def share_record(record: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
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


def choice_record(
    scores: OptionScores, gold: int, rules: Sequence[Rule] = (SUM,), **extras: Any
) -> dict[str, Any]:
    """The multiclass record of one multiple-choice document: under ``probs`` the ``sum`` rule's
    option probabilities (softmax of the log-likelihoods), under each other rule of ``rules`` its
    own (``Rule.field``), the options' log-likelihoods under ``loglikelihoods`` (what temperature
    scaling rescales), ``label = gold``, and the top label at the first argmax of the
    log-likelihoods (the harness's ``acc`` prediction)."""
    lls = [float(ll) for ll in scores.loglikelihoods]
    probs = SUM.probabilities(scores)
    pred = int(np.argmax(lls))
    for rule in rules:
        if rule is not SUM:
            extras = {rule.field: rule.probabilities(scores), **extras}
    return top_label_record(
        probs[pred], pred == gold, probs=probs, label=gold, loglikelihoods=lls, **extras
    )


def histogram_record(histogram: cm.ConfidenceHistogram, **extras: Any) -> dict[str, Any]:
    """Many token predictions of one document, as sufficient statistics."""
    return {"histogram": histogram.to_dict(), **extras}


def record_kind(record: Any) -> RecordKind:
    """The kind of one record (``ValueError`` for a value that is no calib record)."""
    if isinstance(record, dict):
        if "histogram" in record:
            return HISTOGRAM
        if "confidence" in record:
            return MULTICLASS if "probs" in record else TOP_LABEL
    raise ValueError(
        f"{str(record)[:80]} is not a calib record; a calib aggregation needs the records of "
        "calib_tasks.scoring.records"
    )


@dataclass(frozen=True)
class PooledTopLabel:
    """The pooled top-label samples of a task; ``probs``/``labels`` for multiclass records (see
    ``padded_options`` for documents with fewer options)."""

    confidence: np.ndarray
    correct: np.ndarray
    probs: np.ndarray | None
    labels: np.ndarray | None


def pool_top_label(records: Sequence[Any]) -> PooledTopLabel:
    """Stack top-label or multiclass records (the kind of the first; every record must be of it)
    into arrays."""
    records = unwrap_records(records)
    kind = _require_kind(records, (TOP_LABEL, MULTICLASS))
    confidence = np.fromiter((r["confidence"] for r in records), float, len(records))
    correct = np.fromiter((r["correct"] for r in records), float, len(records))
    if kind == MULTICLASS:
        probs = padded_options([r["probs"] for r in records])
        labels = np.fromiter((r["label"] for r in records), int, len(records))
        return PooledTopLabel(confidence, correct, probs, labels)
    return PooledTopLabel(confidence, correct, None, None)


def padded_options(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Option probabilities as an (n, most options) array, a document with fewer options padded
    with probability 0 (which leaves its Brier score, NLL and top label as they are)."""
    out = np.zeros((len(rows), max(len(row) for row in rows)))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def pool_histograms(records: Sequence[Any]) -> list[cm.ConfidenceHistogram]:
    """One histogram per histogram record (a document), in order."""
    records = unwrap_records(records)
    _require_kind(records, (HISTOGRAM,))
    return [cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records]


def records_kind(records: Sequence[Any]) -> RecordKind:
    """The kind of a task's records (that of the first; pooling checks the others)."""
    if not records:
        raise ValueError("no samples to aggregate: the task produced no records")
    return record_kind(unwrap_records(records[:1])[0])


def _require_kind(records: Sequence[Any], kinds: tuple[RecordKind, ...]) -> RecordKind:
    """The kind of the first record, which must be among ``kinds`` and shared by every record."""
    kind = records_kind(records)
    for i, record in enumerate(records):
        try:
            found = record_kind(record)
        except ValueError:
            key = "histogram" if kind == HISTOGRAM else "confidence"
            raise ValueError(
                f"sample {i} is not a {key!r} record (got {str(record)[:80]}); "
                "a calib aggregation needs the records of calib_tasks.scoring.records"
            ) from None
        if found not in kinds or found != kind:
            raise ValueError(
                f"sample {i} is a {found} record, expected {' or '.join(kinds)} records like "
                f"sample 0 ({kind})"
            )
    return kind


Records = Sequence[dict[str, Any]]
eval_logger = logging.getLogger(__name__)


class PooledRecords:
    """A task's records pooled once for all of its aggregations: the harness aggregates every
    metric key of a task on its own list of that task's values, one task after another, and a
    calib task puts the same record objects under every key (``share_record``); ``pooled`` keeps
    the pool until records of another task arrive."""

    def __init__(self, records: Records, task: str = "") -> None:
        self.records = unwrap_records(records)
        self.kind = records_kind(self.records)
        self.task = task
        self._rule_probs: dict[str, np.ndarray] = {}

    def holds(self, records: list[Any]) -> bool:
        """Whether ``records`` (unwrapped) are exactly this pool's record objects, in order."""
        return len(records) == len(self.records) and all(
            a is b for a, b in zip(records, self.records, strict=True)
        )

    @functools.cached_property
    def top_label(self) -> PooledTopLabel:
        """The top-label (and multiclass) arrays (see ``pool_top_label``)."""
        return pool_top_label(self.records)

    @functools.cached_property
    def histograms(self) -> list[cm.ConfidenceHistogram]:
        """One histogram per document (see ``pool_histograms``)."""
        return pool_histograms(self.records)

    @functools.cached_property
    def histogram_metrics(self) -> dict[str, float]:
        """``calib_metrics.histogram_metrics`` of the merged document histograms."""
        return cm.histogram_metrics(cm.ConfidenceHistogram.merge(self.histograms))

    def rule_probs(self, rule: Rule) -> np.ndarray:
        """The option probabilities of ``rule`` (its record field), padded like ``probs``; a
        ``ValueError`` naming the task when a record lacks them."""
        if rule is SUM:
            return self.top_label.probs
        if rule.field not in self._rule_probs:
            missing = next((i for i, r in enumerate(self.records) if rule.field not in r), None)
            if missing is not None:
                raise ValueError(
                    f"{self.task or 'a calib task'}: sample {missing} has no {rule.field!r} "
                    f"(the {rule.name} rule's probabilities)"
                )
            self._rule_probs[rule.field] = padded_options([r[rule.field] for r in self.records])
        return self._rule_probs[rule.field]

    def rule_top_label(self, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, correct) of ``rule``'s prediction: the first option of highest
        probability under the rule, and its probability."""
        if rule is SUM:
            return self.top_label.confidence, self.top_label.correct
        probs = self.rule_probs(rule)
        pred = probs.argmax(axis=1)
        confidence = np.minimum(probs[np.arange(pred.size), pred], 1.0)
        return confidence, (pred == self.top_label.labels).astype(float)

    @functools.cached_property
    def ece_interval(self) -> cm.ConfidenceInterval:
        """95% bootstrap interval of the pooled ECE: documents resampled for token histograms
        (in their canonical order, so however a data-parallel run ordered them), items otherwise
        (seeded, so the same records give the same interval)."""
        if self.kind == HISTOGRAM:
            return cm.bootstrap_ci(histograms=cm.canonical_order(self.histograms), metric="ece")
        return cm.bootstrap_ci(self.top_label.confidence, self.top_label.correct, metric="ece")

    @functools.cached_property
    def uninformative_reason(self) -> str | None:
        """Why the pooled scores carry no information (``calib_metrics.uninformative_reason``:
        all confidences equal, or every document's options tied), or None; logged as a warning
        naming the task, once."""
        if self.kind == HISTOGRAM:
            merged = cm.ConfidenceHistogram.merge(self.histograms)
            reason = cm.histogram_uninformative_reason(merged)
        else:
            options = [r["probs"] for r in self.records] if self.kind == MULTICLASS else None
            reason = cm.uninformative_reason(self.top_label.confidence, option_probs=options)
        if reason is not None:
            eval_logger.warning(
                "%s: THE SCORES CARRY NO INFORMATION (%s): the backend returned no usable "
                "log-probabilities, so the task's ECE and other calibration numbers are not "
                "measurements; its results mark it with uninformative_scores = 1.",
                self.task or "a calib task",
                reason,
            )
        return reason


_last_pool: PooledRecords | None = None  # the harness aggregates one task at a time


def pooled(records: Records, task: str = "") -> PooledRecords:
    """The pool of ``records``: the previous call's when it holds the same record objects."""
    global _last_pool
    if _last_pool is None or not _last_pool.holds(unwrap_records(records)):
        _last_pool = PooledRecords(records, task)
    return _last_pool
