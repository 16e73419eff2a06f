"""calib_clm: next-token calibration of a causal LM on running text.

Every token of a document with at least one token of context is scored (the first given the
model's prefix token, exactly like the harness's ``loglikelihood_rolling``): confidence = the
top-1 next-token probability over the whole vocabulary, correct = the top-1 token is the true
next token. A document is reduced at once to a ``ConfidenceHistogram`` (resolution 0.01), so the
aggregation and the samples file stay small whatever the corpus size; acc, ECE, MCE and
top-label Brier are exact from it, and intervals resample whole documents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np
from lm_eval.api.instance import Instance

from calib_metrics import ConfidenceHistogram
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.records import HISTOGRAM, histogram_record
from calib_tasks.tasks.base import TokenStatsTask, bundled_test_split
from calib_tasks.token_stats import TokenStats

eval_logger = logging.getLogger(__name__)

# 100 cells: exact equal-width ECE for 10, 20, 25, 50 or 100 bins; a few hundred numbers per
# document at most in the samples file (the record is written once per metric key).
HISTOGRAM_RESOLUTION = 100


def token_confidence(stats: TokenStats) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 probability, top-1 is the true token) per scored position."""
    confidence = np.minimum(np.exp(stats.top1_logprob.astype(np.float64)), 1.0)
    return confidence, stats.top1_is_true


class CalibCLMTask(TokenStatsTask):
    """Scores every token of each document with the ``token_stats`` request.

    Running text has no chat turn: under ``--apply_chat_template`` the documents are scored as
    they are (like the harness's ``loglikelihood_rolling`` tasks), and the task says so once.
    """

    record_kind = HISTOGRAM
    text_field = "page"
    _warned_chat_template = False

    def check_doc(self, doc: Mapping[str, Any]) -> str | None:
        text = doc.get(self.text_field)
        if not isinstance(text, str) or not text.strip():
            return f"text field {self.text_field!r} is missing or empty"
        return None

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        if kwargs.get("apply_chat_template") and not self._warned_chat_template:
            self._warned_chat_template = True
            eval_logger.warning(
                "%s: --apply_chat_template has no effect on this task: running text has no chat "
                "turn, so every document is scored without a template.",
                self.config.task,
            )
        return self.token_stats_request(doc, "", self.doc_to_target(doc), **kwargs)

    def score(self, doc: dict, results: list[TokenStats]) -> dict[str, Any]:
        """The document's histogram record and its bits-per-byte terms."""
        (stats,) = results
        return document_results(stats, len(self.doc_to_target(doc).encode("utf-8")))


def document_results(stats: TokenStats, n_bytes: int) -> dict[str, Any]:
    """A document's metric values: its histogram record under every calibration key, and
    (summed log-likelihood, bytes) for the harness's bits_per_byte aggregation."""
    confidence, correct = token_confidence(stats)
    histogram = ConfidenceHistogram.from_samples(
        confidence, correct, resolution=HISTOGRAM_RESOLUTION
    )
    record = histogram_record(histogram, n_tokens=int(stats.n), n_bytes=n_bytes)
    return {
        **metric_table.metric_values(record, HISTOGRAM),
        "bits_per_byte": (float(stats.true_logprob.sum(dtype=np.float64)), n_bytes),
    }


class CalibCLMPileTask(CalibCLMTask):
    """The same task on Pile-style documents, whose text field is ``text``."""

    text_field = "text"


def load_mini(**_: Any) -> datasets.DatasetDict:
    """Bundled public-domain encyclopaedia prose, one ``page`` per document."""
    return bundled_test_split("clm_mini.jsonl")
