"""``token_stats`` requests on the tiny GPT-2, and the comparison of two ``TokenStats``."""

from __future__ import annotations

import numpy as np
from lm_eval.api.instance import Instance

from calib_tasks.token_stats import REQUEST_TYPE, TokenStats

TEXT = (
    "Alice was born in London and works as a physician. Bob plays the piano. The quick brown fox "
    "jumps over the lazy dog. Water boils at one hundred degrees. The currency of Japan is the "
    "yen. Berlin is the capital of Germany. Madrid is located in Spain. 0 1 2 3 4 5 6 7 8 9 . "
)
REVERSED = " ".join(reversed(TEXT.split()))

#: Documents of 1 to 4 windows of the tiny model and (context, continuation) pairs: what every
#: backend must score as the hf backend does.
PAIRS = [
    ("", TEXT[:30]),  # a document of one window
    ("", TEXT),
    ("", REVERSED * 2),  # four windows
    ("The capital of France is", " Paris."),
    ("Bob plays ", "the piano"),  # the space moves to the continuation
    ("The capital of France is\n", "Paris"),  # the newline stays context, unscored
    (TEXT, " Alice was born in London"),  # truncated from the left
    *[("Answer: A B C D. Answer:", f" {letter}") for letter in "ABCD"],  # one model input
    ("The capital of France is", " Paris."),  # a duplicate
]


def stats_requests(pairs: list[tuple[str, str]]) -> list[Instance]:
    """One ``token_stats`` request per (context, continuation) pair; context "" is a document."""
    return [Instance(REQUEST_TYPE, {}, pair, i) for i, pair in enumerate(pairs)]


def assert_same_stats(a: TokenStats, b: TokenStats, atol: float = 1e-5, rtol: float = 0) -> None:
    """The same positions, log-probabilities within ``atol + rtol * |b|``, the same top-1
    verdicts."""
    assert a.n == b.n
    np.testing.assert_allclose(a.true_logprob, b.true_logprob, rtol=rtol, atol=atol)
    np.testing.assert_allclose(a.top1_logprob, b.top1_logprob, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(a.top1_is_true, b.top1_is_true)
