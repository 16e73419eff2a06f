"""The per-sample record of every calib task: how a task writes it, how it is read back (one
parse, into one typed value), and how a task's records are pooled into arrays.

Writing. A task returns the same record under every calibration key (``share_record``); each
key's aggregation reduces the list of records of the whole task, so every metric is computed on
the pooled samples (never as an average of per-subject or per-document values). Records are
plain JSON-friendly dicts. ``--log_samples`` writes each metric key's value on the sample's line,
so the record itself goes under ``RECORD_KEY`` ("ece") only and the other keys hold a
``SharedRecord``, a short string: a line carries one copy of the record, from which
``calib-report`` recomputes everything. The kinds (``RecordKind``):

* top_label: ``{"confidence": float, "correct": 0|1, ...extras}`` for one prediction (a fact, an
  MMLU question scored on the vocabulary); extras are any breakdown key such as ``subject`` or
  ``relation``.
* multiclass: a top-label record with every option's probability under ``probs`` (the ``sum``
  rule's) and the gold index under ``label``, and optionally each other computed confidence
  rule's option probabilities (``Rule.field``) and the options' ``loglikelihoods``: its option
  parts (``OPTION_PARTS``). Written by ``choice_record``.
* histogram: ``{"histogram": cm.ConfidenceHistogram.to_dict(), ...extras}`` for the many token
  predictions of one document; bootstrap intervals then resample whole documents.
* generation: ``{"correct": 0|1, "methods": [name, ...], "confidences": [float | None, ...],
  ...extras}`` for one generated answer (of one document, under one filter), its confidence under
  every confidence method the task computes (``calib_tasks.scoring.confidence_methods``), in
  the same order; None where the method gave none (an answer that is no span of the text, an
  unparsed verbalized reply); extras such as ``n_tokens`` and ``verbalized_reply``. Two parallel
  lists, not a mapping to optional numbers: every line of a task then has one shape, which typed
  loggers need (W&B's tables type a column by its first row). Each method is pooled on its own
  as top-label predictions (``Pool.method``).

Reading. ``parse_record`` turns a written record into a ``Prediction``, a ``TokenHistogram`` or
an ``Answer`` (a ``Record``), or raises ``ValueError`` saying what breaks its contract. An
option part other than ``probs`` is checked on its own: an unusable one does not break the
record; it is kept out of the record's parts with what is wrong with it, and only what uses the
part fails. The
aggregations read strictly (``pooled``: any problem is an error naming the sample); calib-report
reads leniently (a problem is a line of the report naming file and line,
``calib_tasks.report.samples``).

Pooling. A ``Pool`` holds records of one kind (or top-label and multiclass ones together, as
top-label) as arrays: confidence and correctness, labels and each option part padded to the most
options, one histogram per document, plus the extra fields every record carries.

A new kind of record is added here: its ``RecordKind``, its writer, its test in ``record_kind``,
its parser in ``_PARSERS`` (and its class in ``Record``), and its arrays in ``Pool``; then the
metric table's rows that compute on it (``calib_tasks.scoring.metric_table``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import numpy as np

import calib_metrics as cm
from calib_metrics.degenerate import histogram_uninformative_reason, uninformative_reason
from calib_metrics.histogram import canonical_order
from calib_metrics.validation import ROW_SUM_TOLERANCE_PER_CLASS
from calib_tasks.scoring.confidence_rules import RULES, SUM, OptionScores, Rule

RECORD_KEY = "ece"
#: Where a record goes instead under ``--predict_only``, which renames every metric ``bypass``
#: (``Task.override_metric``) and aggregates it to a placeholder.
PREDICT_ONLY_KEY = "bypass"

#: The kinds of record: one prediction; one prediction with every option's probability and the
#: gold index (``probs``, ``label``); the token predictions of one document.
RecordKind = Literal["top_label", "multiclass", "histogram", "generation"]
TOP_LABEL: RecordKind = "top_label"
MULTICLASS: RecordKind = "multiclass"
HISTOGRAM: RecordKind = "histogram"
GENERATION: RecordKind = "generation"
#: The kinds of one prediction per record (a confidence and whether it was right): they pool
#: together, as top-label records.
ONE_PREDICTION: tuple[RecordKind, ...] = (TOP_LABEL, MULTICLASS)
#: How messages name each kind of record.
KIND_TEXT: dict[RecordKind, str] = {
    TOP_LABEL: "top-label",
    MULTICLASS: "multiclass",
    HISTOGRAM: "histogram",
    GENERATION: "generation",
}

#: The field of a multiclass record holding the options' log-likelihoods.
LOGLIKELIHOODS = "loglikelihoods"
#: The option parts of a multiclass record, one value per option each: the ``sum`` rule's
#: probabilities (``probs``, part of the record's contract), every other rule's probabilities
#: and the log-likelihoods (each checked on its own).
OPTION_PARTS: tuple[str, ...] = (
    SUM.field,
    *(rule.field for rule in RULES if rule is not SUM),
    LOGLIKELIHOODS,
)
_RULE_OF_FIELD = {rule.field: rule for rule in RULES}
_PLURAL = {LOGLIKELIHOODS: "log-likelihoods"} | {rule.field: "probabilities" for rule in RULES}


# ---------------------------------------------------------------------------------- writing


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
        probs[pred], pred == gold, probs=probs, label=gold, **{LOGLIKELIHOODS: lls}, **extras
    )


def histogram_record(histogram: cm.ConfidenceHistogram, **extras: Any) -> dict[str, Any]:
    """Many token predictions of one document, as sufficient statistics."""
    return {"histogram": histogram.to_dict(), **extras}


def generation_record(
    correct: bool, confidences: Mapping[str, float | None], **extras: Any
) -> dict[str, Any]:
    """One generated answer: whether it was right and its confidence (in [0, 1], or None) under
    every confidence method (``confidences``, in method order), plus extras."""
    for method, value in confidences.items():
        if value is not None and not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"the {method} confidence must lie in [0, 1], got {value!r}")
    values = [None if v is None else float(v) for v in confidences.values()]
    return {
        "correct": int(bool(correct)),
        "methods": list(confidences),
        "confidences": values,
        **extras,
    }


# ---------------------------------------------------------------------------------- reading


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One prediction, read from a top-label or multiclass record: its confidence in [0, 1],
    whether it was right (0 or 1), the gold option's index (multiclass records only; a top-label
    record's ``label`` is one of its extras), its usable option parts (part -> one value per
    option; ``probs`` among them exactly for a multiclass record), its unusable ones (part ->
    what is wrong with it), and every other field as written (``extras``)."""

    confidence: float
    correct: int
    label: int | None = None
    parts: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    unusable: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> RecordKind:
        """Multiclass when the record has option probabilities, else top-label."""
        return MULTICLASS if SUM.field in self.parts else TOP_LABEL


@dataclass(frozen=True, kw_only=True)
class TokenHistogram:
    """The token predictions of one document, read from a histogram record, and the record's
    other fields as written (``extras``: ``n_tokens``, ``n_bytes``)."""

    kind: ClassVar[RecordKind] = HISTOGRAM
    histogram: cm.ConfidenceHistogram
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One generated answer, read from a generation record: whether it was right (0 or 1), its
    confidence under each method (None where the method gave none), and the record's other
    fields as written (``extras``)."""

    kind: ClassVar[RecordKind] = GENERATION
    correct: int
    confidences: Mapping[str, float | None]
    extras: Mapping[str, Any] = field(default_factory=dict)


#: A record as read: the typed value of every kind.
Record = Prediction | TokenHistogram | Answer


def record_kind(value: Any) -> RecordKind | None:
    """The kind of record ``value`` is written as (by its keys, before any check of its values),
    or None when it is no calib record."""
    if isinstance(value, dict):
        if "histogram" in value:
            return HISTOGRAM
        if "methods" in value:
            return GENERATION
        if "confidence" in value:
            return MULTICLASS if SUM.field in value else TOP_LABEL
    return None


def parse_record(value: Any) -> Record:
    """The record written as ``value``; ``ValueError`` saying what breaks its contract (see the
    module docstring; an unusable option part other than ``probs`` is no error)."""
    kind = record_kind(value)
    if kind is None:
        raise ValueError(
            f"{str(value)[:80]} is not a calib record; a calib aggregation needs the records of "
            "calib_tasks.scoring.records"
        )
    return _PARSERS[kind](value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_probability(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _option_values_problem(
    name: str, values: Any, is_usable: Callable[[Any], bool], what: str, n: int | None = None
) -> str | None:
    """None when ``values`` is a non-empty list (of ``n`` values when given) of which every
    one ``is_usable``, else what is wrong (``what`` says what a value must be)."""
    if not isinstance(values, list) or not values:
        return f"{name} must be a non-empty list of option {_PLURAL[name]}, got {values!r}"
    if n is not None and len(values) != n:
        return f"{name} must hold {n} values, one per option of probs, got {len(values)}"
    for i, value in enumerate(values):
        if not is_usable(value):
            return f"{name}[{i}] must be {what}, got {value!r}"
    return None


def _probabilities_problem(
    name: str, probs: Any, normalised: bool = True, n: int | None = None
) -> str | None:
    """None for usable option probabilities (summing to 1 when ``normalised``), else what is
    wrong."""
    problem = _option_values_problem(name, probs, _is_probability, "a number in [0, 1]", n)
    if problem is not None:
        return problem
    total = math.fsum(probs)
    if normalised and abs(total - 1.0) > ROW_SUM_TOLERANCE_PER_CLASS * len(probs):
        return f"{name} must sum to 1, got {total!r}"
    return None


def _part_problem(part: str, values: Any, n: int) -> str | None:
    """None when the option part ``part`` (other than ``probs``) of a record of ``n`` options is
    usable, else what is wrong: the rule's option probabilities (summing to 1 for a normalised
    rule), or finite log-likelihoods, one per option."""
    if part == LOGLIKELIHOODS:
        return _option_values_problem(part, values, _is_number, "a finite number", n)
    return _probabilities_problem(part, values, _RULE_OF_FIELD[part].normalised, n)


def _prediction(value: dict[str, Any]) -> Prediction:
    """A top-label or multiclass record: ``confidence`` a number in [0, 1], ``correct`` 0 or 1
    and, with ``probs``, those a list of numbers in [0, 1] summing to 1 with ``label`` an index
    into them; its other option parts checked each on its own."""
    confidence, correct = value["confidence"], value.get("correct")
    if not _is_probability(confidence):
        raise ValueError(f"confidence must be a number in [0, 1], got {confidence!r}")
    if correct not in (0, 1) or isinstance(correct, float):
        raise ValueError(f"correct must be 0 or 1, got {correct!r}")
    if SUM.field not in value:
        extras = {k: v for k, v in value.items() if k not in ("confidence", "correct")}
        return Prediction(confidence=float(confidence), correct=int(correct), extras=extras)
    probs, label = value[SUM.field], value.get("label")
    problem = _probabilities_problem(SUM.field, probs)
    if problem is not None:
        raise ValueError(problem)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(probs):
        raise ValueError(
            f"label must be an index into probs (0 to {len(probs) - 1}), got {label!r}"
        )
    parts = {SUM.field: tuple(float(p) for p in probs)}
    unusable = {}
    for part in OPTION_PARTS[1:]:
        if part in value:
            problem = _part_problem(part, value[part], len(probs))
            if problem is None:
                parts[part] = tuple(float(x) for x in value[part])
            else:
                unusable[part] = problem
    written = ("confidence", "correct", "label", *OPTION_PARTS)
    return Prediction(
        confidence=float(confidence),
        correct=int(correct),
        label=label,
        parts=parts,
        unusable=unusable,
        extras={k: v for k, v in value.items() if k not in written},
    )


def _token_histogram(value: dict[str, Any]) -> TokenHistogram:
    """A histogram record: ``histogram`` a ``ConfidenceHistogram.to_dict()``."""
    try:
        histogram = cm.ConfidenceHistogram.from_dict(value["histogram"])
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(f"unusable histogram record ({error})") from None
    extras = {k: v for k, v in value.items() if k != "histogram"}
    return TokenHistogram(histogram=histogram, extras=extras)


def _answer(value: dict[str, Any]) -> Answer:
    """A generation record: ``correct`` 0 or 1, ``methods`` a non-empty list of distinct names,
    ``confidences`` one number in [0, 1] or None per method."""
    correct, methods = value.get("correct"), value["methods"]
    confidences = value.get("confidences")
    if correct not in (0, 1) or isinstance(correct, float):
        raise ValueError(f"correct must be 0 or 1, got {correct!r}")
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) for m in methods)
        or len(set(methods)) != len(methods)
    ):
        raise ValueError(f"methods must be a non-empty list of distinct names, got {methods!r}")
    if not isinstance(confidences, list) or len(confidences) != len(methods):
        raise ValueError(
            f"confidences must hold one value per method ({len(methods)}), got {confidences!r}"
        )
    for method, confidence in zip(methods, confidences, strict=True):
        if confidence is not None and not _is_probability(confidence):
            raise ValueError(
                f"the {method} confidence must be a number in [0, 1] or null, got {confidence!r}"
            )
    written = ("correct", "methods", "confidences")
    return Answer(
        correct=int(correct),
        confidences=dict(zip(methods, confidences, strict=True)),
        extras={k: v for k, v in value.items() if k not in written},
    )


#: The parser of each kind of record.
_PARSERS: dict[RecordKind, Callable[[dict[str, Any]], Record]] = {
    TOP_LABEL: _prediction,
    MULTICLASS: _prediction,
    HISTOGRAM: _token_histogram,
    GENERATION: _answer,
}


def pool_kind(kinds: Sequence[RecordKind]) -> RecordKind | None:
    """The kind of a pool of records of ``kinds``: theirs when they share it; top-label for
    top-label and multiclass records together (each one prediction); None when they cannot be
    pooled (token histograms with predictions) or there are none."""
    found = set(kinds)
    if len(found) == 1:
        return found.pop()
    return TOP_LABEL if found == set(ONE_PREDICTION) else None


# ---------------------------------------------------------------------------------- pooling


def padded_options(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Option values as an (n, most options) array, a document with fewer options padded with
    0 (a probability of 0 leaves its Brier score, NLL and top label as they are)."""
    out = np.zeros((len(rows), max(len(row) for row in rows)))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


_PART_WORDS = {LOGLIKELIHOODS: "the options' log-likelihoods"} | {
    rule.field: f"the {rule.name} rule's probabilities" for rule in RULES
}


class Pool:
    """Records pooled into arrays (of a task, one of its filters, a group's tasks): ``kind``
    (``pool_kind`` of the records'), per prediction ``confidence`` and ``correct``, for
    multiclass pools ``labels`` and each option part (``part``), per document its
    ``histograms``, and ``field_values`` of the extra fields every record carries. Every array
    is computed once, when first asked for; ``task`` names the pool in errors."""

    def __init__(self, records: Sequence[Record], task: str = "") -> None:
        kind = pool_kind([r.kind for r in records])
        if kind is None:
            kinds = " and ".join(sorted({KIND_TEXT[r.kind] for r in records})) or "no"
            raise ValueError(f"{task or 'a calib task'}: cannot pool {kinds} records")
        self.records: tuple[Record, ...] = tuple(records)
        self.kind: RecordKind = kind
        self.task = task
        self._parts: dict[str, np.ndarray] = {}
        self._methods: dict[str, Pool | None] = {}
        #: What has been logged about the pool already (each warning once per task).
        self.warned: set[str] = set()
        self._histogram_metrics: dict[int, dict[str, float]] = {}
        self._intervals: dict[tuple[int, str, int], cm.ConfidenceInterval] = {}

    @property
    def n(self) -> int:
        """How many records (documents) the pool holds."""
        return len(self.records)

    @property
    def _name(self) -> str:
        return self.task or "a calib task"

    def _predictions(self, *, multiclass: bool = False) -> tuple[Prediction, ...]:
        """The records, which must be predictions (multiclass ones when ``multiclass``)."""
        if self.kind not in ONE_PREDICTION:
            raise ValueError(f"{self._name}: {KIND_TEXT[self.kind]} records are no predictions")
        if multiclass and self.kind != MULTICLASS:
            raise ValueError(f"{self._name}: the records carry no option probabilities")
        return cast(tuple[Prediction, ...], self.records)

    @functools.cached_property
    def confidence(self) -> np.ndarray:
        """Each prediction's confidence."""
        return np.fromiter((r.confidence for r in self._predictions()), float, self.n)

    @functools.cached_property
    def correct(self) -> np.ndarray:
        """Whether each prediction (or generated answer) was right, as 0.0 or 1.0."""
        records = self.records if self.kind == GENERATION else self._predictions()
        return np.fromiter((r.correct for r in records), float, self.n)  # type: ignore[union-attr]

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """Each document's gold option (multiclass pools)."""
        return np.fromiter((r.label for r in self._predictions(multiclass=True)), int, self.n)

    @functools.cached_property
    def option_counts(self) -> np.ndarray:
        """Each document's number of options (multiclass pools)."""
        records = self._predictions(multiclass=True)
        return np.fromiter((len(r.parts[SUM.field]) for r in records), int, self.n)

    @property
    def probs(self) -> np.ndarray:
        """The ``sum`` rule's option probabilities, padded (``part("probs")``)."""
        return self.part(SUM.field)

    def holders(self, part: str) -> np.ndarray:
        """Which records hold a usable option part ``part`` (a boolean per record)."""
        return np.fromiter(
            (isinstance(r, Prediction) and part in r.parts for r in self.records), bool, self.n
        )

    def part(self, part: str) -> np.ndarray:
        """The option part ``part`` of every record as an (n, most options) array, padded with
        0 (``padded_options``); ``ValueError`` naming the task and the first record that lacks
        it or whose part is unusable (and what is wrong with it)."""
        if part not in self._parts:
            records = self._predictions(multiclass=True)
            for i, record in enumerate(records):
                if part not in record.parts:
                    problem = record.unusable.get(part)
                    reason = f"unusable: {problem}" if problem else _PART_WORDS[part]
                    raise ValueError(f"{self._name}: sample {i} has no {part!r} ({reason})")
            self._parts[part] = padded_options([r.parts[part] for r in records])
        return self._parts[part]

    def method(self, name: str) -> Pool | None:
        """The top-label pool of the generated answers that have a confidence under the method
        ``name`` (generation pools; None when none has one), built once."""
        if self.kind != GENERATION:
            raise ValueError(f"{self._name}: {KIND_TEXT[self.kind]} records have no methods")
        if name not in self._methods:
            answers = cast(tuple[Answer, ...], self.records)
            predictions = [
                Prediction(confidence=c, correct=a.correct, extras=a.extras)
                for a in answers
                if (c := a.confidences.get(name)) is not None
            ]
            self._methods[name] = Pool(predictions, self.task) if predictions else None
        return self._methods[name]

    def without_confidence(self, name: str) -> int:
        """How many generated answers have no confidence under the method ``name``."""
        return self.n - (0 if (pool := self.method(name)) is None else pool.n)

    def select(self, index: Sequence[int] | np.ndarray) -> Pool:
        """The pool of the records at positions ``index`` (or where a boolean mask is true)."""
        positions = np.flatnonzero(index) if np.asarray(index).dtype == bool else index
        return Pool([self.records[i] for i in positions], self.task)

    def holding(self, *parts: str) -> Pool | None:
        """The pool of the records that hold every one of ``parts`` usably (None when none)."""
        mask = np.logical_and.reduce([self.holders(part) for part in parts])
        return self.select(mask) if mask.any() else None

    def field_values(self, name: str) -> list[Any] | None:
        """The extra field ``name`` of every record, in order; None when some record lacks it."""
        if not all(name in r.extras for r in self.records):
            return None
        return [r.extras[name] for r in self.records]

    def rule_top_label(self, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, correct) of ``rule``'s prediction: the first option of highest
        probability under the rule, and its probability (the records' own for ``sum``)."""
        if rule is SUM:
            return self.confidence, self.correct
        probs = self.part(rule.field)
        pred = probs.argmax(axis=1)
        return probs[np.arange(pred.size), pred], (pred == self.labels).astype(float)

    @functools.cached_property
    def histograms(self) -> list[cm.ConfidenceHistogram]:
        """One histogram per document, in order (token pools)."""
        if self.kind != HISTOGRAM:
            raise ValueError(f"{self._name}: the records hold no histograms")
        return [cast(TokenHistogram, r).histogram for r in self.records]

    @functools.cached_property
    def merged(self) -> cm.ConfidenceHistogram:
        """The documents' histograms merged into one (token pools)."""
        return cm.ConfidenceHistogram.merge(self.histograms)

    def histogram_metrics(self, n_bins: int) -> dict[str, float]:
        """``calib_metrics.histogram_metrics`` of the merged histogram with ``n_bins`` bins,
        computed once."""
        if n_bins not in self._histogram_metrics:
            self._histogram_metrics[n_bins] = cm.histogram_metrics(self.merged, n_bins=n_bins)
        return self._histogram_metrics[n_bins]

    def ece_interval(self, *, n_bins: int, strategy: str, seed: int) -> cm.ConfidenceInterval:
        """The ECE's bootstrap interval (calib_metrics' level and resamples) with these bins and
        seed, computed once: documents resampled for token histograms (in their canonical order,
        so however a data-parallel run ordered them), items otherwise."""
        key = (n_bins, strategy, seed)
        if key not in self._intervals:
            options = {"n_bins": n_bins, "strategy": strategy, "seed": seed}
            if self.kind == HISTOGRAM:
                self._intervals[key] = cm.bootstrap_ci(
                    histograms=canonical_order(self.histograms), metric="ece", **options
                )
            else:
                self._intervals[key] = cm.bootstrap_ci(
                    self.confidence, self.correct, metric="ece", **options
                )
        return self._intervals[key]

    @functools.cached_property
    def uninformative_reason(self) -> str | None:
        """Why the pooled scores carry no information (``calib_metrics.degenerate``: all
        confidences equal, or every document's options tied), or None."""
        if self.kind == HISTOGRAM:
            return histogram_uninformative_reason(self.merged)
        options = None
        if self.kind == MULTICLASS:
            options = [r.parts[SUM.field] for r in self._predictions()]
        return uninformative_reason(self.confidence, option_probs=options)


def parse_records(values: Sequence[Any]) -> list[Record]:
    """Strictly: the records of ``values`` (a task's, as its aggregations receive them, each a
    record or a ``SharedRecord``), all of the first one's kind; ``ValueError`` naming the first
    sample that is not (or breaks its kind's contract)."""
    values = unwrap_records(values)
    if not values:
        raise ValueError("no samples to aggregate: the task produced no records")
    first = record_kind(values[0])
    records = []
    for i, value in enumerate(values):
        found = record_kind(value)
        if found is None and first is not None:
            key = "histogram" if first == HISTOGRAM else "confidence"
            raise ValueError(
                f"sample {i} is not a {key!r} record (got {str(value)[:80]}); "
                "a calib aggregation needs the records of calib_tasks.scoring.records"
            )
        if found is not None and found != first:
            raise ValueError(
                f"sample {i} is a {KIND_TEXT[found]} record, expected {KIND_TEXT[first]} "
                "records like sample 0"
            )
        try:
            records.append(parse_record(value))
        except ValueError as error:
            raise ValueError(f"sample {i}: {error}") from None
    return records


#: What the harness hands an aggregation: the task's records, or references to them.
Records = Sequence[Any]
_last_pool: tuple[list[Any], Pool] | None = None  # the harness aggregates one task at a time


def pooled(values: Records, task: str = "") -> Pool:
    """The strict pool (``parse_records``) of a task's ``values``: the previous call's when it
    holds the same record objects (every metric key of a task is aggregated on its own list of
    the same records, one task after another)."""
    global _last_pool
    records = unwrap_records(values)
    if _last_pool is None or not _same_objects(_last_pool[0], records):
        _last_pool = (records, Pool(parse_records(records), task))
    return _last_pool[1]


def _same_objects(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether ``a`` and ``b`` hold the very same objects, in order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
