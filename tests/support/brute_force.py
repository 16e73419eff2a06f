"""The calibration metrics of a calib task recomputed from its logged records by brute force.

Plain Python loops over the items, written from the metrics' definitions (README's metric list,
the docstrings of ``calib_metrics``) and never calling ``calib_metrics``: a test compares the
harness's results with these, so that a wrong binning, a wrong sum or a record read wrongly
fails it, not only a broken plumbing. numpy serves only for its random generator and its
quantiles: the bootstrap intervals draw the random numbers ``calib_metrics`` documents drawing,
so that the same resamples are compared.

Items are top-label (``confidence``, ``correct``) sequences; option probabilities are one row per
document (a document with fewer options than the most counts as having probability 0 on the
missing ones); token tasks' records carry one ``ConfidenceHistogram.to_dict()`` per document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

#: Equal-width bins of every binned metric: [i/10, (i+1)/10), the last closed at 1.
N_BINS = 10
#: The bootstrap: resamples, coverage, seed of ``numpy.random.Generator(PCG64(seed))``.
N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
#: Cells of the histogram an item bootstrap draws from (a multiple of ``N_BINS``).
RESOLUTION = 1000
#: The gold probability is floored at this in ``nll`` (a probability 0 costs ~27.6 nats).
NLL_EPSILON = 1e-12
#: Confidences (or a document's option probabilities) closer than this are tied.
TIE_TOLERANCE = 1e-9

Rows = Sequence[Sequence[float]]


def cell(confidence: float, n_cells: int) -> int:
    """The equal-width cell of ``confidence`` among ``n_cells``: ``floor(c * n_cells)`` in exact
    arithmetic, the last cell closed at 1."""
    return min(math.floor(Fraction(float(confidence)) * n_cells), n_cells - 1)


def _bins(confidence: Sequence[float], correct: Sequence[float]) -> list[list[tuple[float, float]]]:
    """The (confidence, correct) items of each of the ``N_BINS`` bins."""
    bins: list[list[tuple[float, float]]] = [[] for _ in range(N_BINS)]
    for c, y in zip(confidence, correct, strict=True):
        bins[cell(c, N_BINS)].append((float(c), float(y)))
    return bins


def _gaps(confidence: Sequence[float], correct: Sequence[float]) -> list[tuple[int, float]]:
    """(items, |accuracy - mean confidence|) of every non-empty bin."""
    out = []
    for items in _bins(confidence, correct):
        if items:
            accuracy = sum(y for _, y in items) / len(items)
            mean_confidence = sum(c for c, _ in items) / len(items)
            out.append((len(items), abs(accuracy - mean_confidence)))
    return out


def ece(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """``sum_b n_b / n * |acc_b - conf_b|``."""
    n = len(confidence)
    return sum(count / n * gap for count, gap in _gaps(confidence, correct))


def mce(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """``max_b |acc_b - conf_b|`` over the non-empty bins."""
    return max(gap for _, gap in _gaps(confidence, correct))


def auroc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """The share of (correct, wrong) pairs whose correct item is the more confident, ties
    counting 1/2; 0.5 when either kind is missing."""
    right = [c for c, y in zip(confidence, correct, strict=True) if y]
    wrong = [c for c, y in zip(confidence, correct, strict=True) if not y]
    if not right or not wrong:
        return 0.5
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def aurc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """``mean_k E_k / k``, ``E_k`` the expected number of errors among the ``k`` most confident
    items when items of equal confidence come in random order."""
    blocks: dict[float, list[float]] = {}
    for c, y in zip(confidence, correct, strict=True):
        blocks.setdefault(c, []).append(y)
    total, seen, errors_before = 0.0, 0, 0.0
    for c in sorted(blocks, reverse=True):
        block = blocks[c]
        block_errors = sum(1 - y for y in block)
        for j in range(1, len(block) + 1):
            expected = errors_before + j * block_errors / len(block)
            total += expected / (seen + j)
        seen += len(block)
        errors_before += block_errors
    return total / seen


def brier_top_label(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """``mean_i (c_i - y_i)**2``."""
    pairs = list(zip(confidence, correct, strict=True))
    return sum((c - y) ** 2 for c, y in pairs) / len(pairs)


def _padded(rows: Rows) -> list[list[float]]:
    k = max(len(row) for row in rows)
    return [[float(p) for p in row] + [0.0] * (k - len(row)) for row in rows]


def brier_multiclass(rows: Rows, labels: Sequence[int]) -> float:
    """``mean_i sum_k (p_ik - [k = y_i])**2``."""
    total = 0.0
    for row, label in zip(_padded(rows), labels, strict=True):
        total += sum((p - (k == label)) ** 2 for k, p in enumerate(row))
    return total / len(labels)


def nll(rows: Rows, labels: Sequence[int]) -> float:
    """``-mean_i log max(p_{i, y_i}, NLL_EPSILON)``, in nats."""
    gold = [max(float(row[label]), NLL_EPSILON) for row, label in zip(rows, labels, strict=True)]
    return -sum(math.log(p) for p in gold) / len(gold)


def classwise_ece(rows: Rows, labels: Sequence[int]) -> float:
    """The ECE of every (document, option) pair: the option's probability against whether it
    is the gold option."""
    pairs = [
        (p, float(k == label))
        for row, label in zip(_padded(rows), labels, strict=True)
        for k, p in enumerate(row)
    ]
    return ece([p for p, _ in pairs], [y for _, y in pairs])


def sce(rows: Rows, labels: Sequence[int]) -> float:
    """The mean over options k of the ECE of ``p_k`` against ``label == k``."""
    padded = _padded(rows)
    k = len(padded[0])
    per_option = [
        ece([row[j] for row in padded], [float(label == j) for label in labels]) for j in range(k)
    ]
    return sum(per_option) / k


def top_label(rows: Rows, labels: Sequence[int]) -> tuple[list[float], list[float]]:
    """(confidence, correct) of the first most probable option of each row (confidence at most
    1: raw probabilities that do not sum to 1 can exceed it by rounding)."""
    confidence, correct = [], []
    for row, label in zip(rows, labels, strict=True):
        best = max(range(len(row)), key=lambda j: (row[j], -j))
        confidence.append(min(float(row[best]), 1.0))
        correct.append(float(best == label))
    return confidence, correct


def uninformative(confidence: Sequence[float], rows: Rows | None = None) -> float:
    """1.0 when every confidence is the same value, or (``rows`` given) every document's options
    are tied (within ``TIE_TOLERANCE`` of the largest value); else 0.0."""

    def tied(values: Sequence[float]) -> bool:
        return max(values) - min(values) <= TIE_TOLERANCE * max(abs(v) for v in values)

    if tied(confidence):
        return 1.0
    if rows is not None and all(tied(row) for row in rows):
        return 1.0
    return 0.0


def _interval(estimate: float, values: list[float]) -> tuple[float, float]:
    """The percentile interval of ``values`` (numpy's linear interpolation), widened to hold
    ``estimate``."""
    tail = (1.0 - LEVEL) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return min(float(low), estimate), max(float(high), estimate)


def _ece_of_totals(totals: list[list[float]]) -> float:
    """The ECE of per-bin [count, sum of correctness, sum of confidences]."""
    n = sum(count for count, _, _ in totals)
    return sum(abs(hits - confidences) for _, hits, confidences in totals) / n


def item_ece_interval(confidence: Sequence[float], correct: Sequence[float]) -> tuple[float, float]:
    """The ECE's bootstrap interval over items, drawn as ``calib_metrics.bootstrap_ci`` draws
    them: the items' counts per non-empty (cell, correctness) entry of a ``RESOLUTION``-cell
    histogram, entries in (cell, correctness) order, are one multinomial draw of the generator
    per resample, each drawn item carrying its entry's mean confidence."""
    entries: dict[tuple[int, int], list[float]] = {}
    for c, y in zip(confidence, correct, strict=True):
        entry = entries.setdefault((cell(c, RESOLUTION), int(y)), [0, 0.0])
        entry[0] += 1
        entry[1] += float(c)
    keys = sorted(entries)
    n = len(confidence)
    rng = np.random.Generator(np.random.PCG64(SEED))
    draws = rng.multinomial(n, [entries[key][0] / n for key in keys], size=N_RESAMPLES)
    values = []
    for drawn in draws.tolist():
        totals = [[0.0, 0.0, 0.0] for _ in range(N_BINS)]
        for (entry_cell, y), times in zip(keys, drawn, strict=True):
            count, confidences = entries[(entry_cell, y)]
            row = totals[entry_cell // (RESOLUTION // N_BINS)]
            row[0] += times
            row[1] += times * y
            row[2] += times * confidences / count
        values.append(_ece_of_totals(totals))
    return _interval(ece(confidence, correct), values)


def _document_totals(histogram: dict[str, Any]) -> list[list[float]]:
    """Per-bin [count, sum of correctness, sum of confidences] of one document's histogram."""
    width = histogram["resolution"] // N_BINS
    totals = [[0.0, 0.0, 0.0] for _ in range(N_BINS)]
    columns = ("cell", "correct", "count", "sum_confidence")
    for entry_cell, y, count, confidences in zip(*(histogram[c] for c in columns), strict=True):
        row = totals[entry_cell // width]
        row[0] += count
        row[1] += count * y
        row[2] += confidences
    return totals


def _canonical_order(histograms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents in ``calib_metrics.canonical_order``: by resolution, then the bytes of their
    columns (integers as int64, sums as float64)."""

    def key(histogram: dict[str, Any]) -> tuple[int, bytes]:
        integers = ("cell", "correct", "count")
        floats = ("sum_confidence", "sum_sq_confidence")
        data = [np.asarray(histogram[c], dtype=np.int64).tobytes() for c in integers]
        data += [np.asarray(histogram[c], dtype=np.float64).tobytes() for c in floats]
        return histogram["resolution"], b"".join(data)

    return sorted(histograms, key=key)


def document_ece_interval(histograms: list[dict[str, Any]]) -> tuple[float, float]:
    """The ECE's bootstrap interval over documents (token tasks), drawn as
    ``calib_metrics.bootstrap_ci`` draws them: the non-empty documents in canonical order,
    each resample's documents one row of ``integers(0, documents)`` draws (all rows in one call,
    as there are fewer than 4,194 documents)."""
    documents = [_document_totals(h) for h in _canonical_order(histograms) if sum(h["count"]) > 0]
    assert len(documents) * N_RESAMPLES <= 1 << 22, "the package draws more documents in chunks"
    rng = np.random.Generator(np.random.PCG64(SEED))
    draws = rng.integers(0, len(documents), size=(N_RESAMPLES, len(documents)))
    values = []
    for drawn in draws.tolist():
        totals = [[0.0, 0.0, 0.0] for _ in range(N_BINS)]
        for document in drawn:
            for row, document_row in zip(totals, documents[document], strict=True):
                for i in range(3):
                    row[i] += document_row[i]
        values.append(_ece_of_totals(totals))
    merged = [[sum(d[b][i] for d in documents) for i in range(3)] for b in range(N_BINS)]
    return _interval(_ece_of_totals(merged), values)


def histogram_metrics(histograms: list[dict[str, Any]]) -> dict[str, float]:
    """``acc``, ``ece``, ``mce``, ``brier_top_label`` and ``uninformative`` of the pooled token
    predictions of the documents' histograms (the sums of a cell's items: exact for bins that are
    unions of cells)."""
    width = {h["resolution"] for h in histograms}
    assert len(width) == 1 and width.pop() % N_BINS == 0
    totals = [[0.0, 0.0, 0.0] for _ in range(N_BINS)]
    n = hits = squared_error = confidences = squares = 0.0
    for histogram in histograms:
        for row, document_row in zip(totals, _document_totals(histogram), strict=True):
            for i in range(3):
                row[i] += document_row[i]
        columns = ("correct", "count", "sum_confidence", "sum_sq_confidence")
        for y, count, total, total_sq in zip(*(histogram[c] for c in columns), strict=True):
            n += count
            hits += count * y
            confidences += total
            squares += total_sq
            squared_error += total_sq - 2 * y * total + count * y  # sum (c - y)**2, y in {0, 1}
    gaps = [abs(h / count - c / count) for count, h, c in totals if count]
    mean = confidences / n
    return {
        "acc": hits / n,
        "ece": sum(count / n * abs(h / count - c / count) for count, h, c in totals if count),
        "mce": max(gaps),
        "brier_top_label": max(squared_error, 0.0) / n,
        "uninformative": float(squares / n - mean * mean <= TIE_TOLERANCE * max(1.0, mean)),
    }
