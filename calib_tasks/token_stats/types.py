"""The request type's name, its response type and its error (the package's public home)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

REQUEST_TYPE = "token_stats"


class TokenStats(tuple):
    """Statistics of the scored tokens of one request, one entry per scored position.

    Attributes:
        true_logprob: float32, log-probability of the true next token.
        top1_logprob: float32, log-probability of the most probable token over the whole
            vocabulary (so ``top1_logprob >= true_logprob``).
        top1_is_true: bool, whether the most probable token is the true token.

    The arrays are 1-D, of equal length, read-only copies; instances are immutable and compare
    by identity. As a value the response is the pair ``(sum of true_logprob, all of
    top1_is_true)``, the harness's ``loglikelihood`` response for the same scored tokens: every
    consumer of responses the harness ships reads it as one (the samples file writes the pair as
    JSON; the W&B logger indexes responses as the task's output type has them).
    """

    # the public name (and pickle path) is calib_tasks.token_stats.TokenStats
    __module__ = "calib_tasks.token_stats"

    true_logprob: np.ndarray
    top1_logprob: np.ndarray
    top1_is_true: np.ndarray

    def __new__(
        cls, true_logprob: np.ndarray, top1_logprob: np.ndarray, top1_is_true: np.ndarray
    ) -> "TokenStats":
        arrays = {
            "true_logprob": np.array(true_logprob, dtype=np.float32),
            "top1_logprob": np.array(top1_logprob, dtype=np.float32),
            "top1_is_true": np.array(top1_is_true, dtype=np.bool_),
        }
        shapes = {name: a.shape for name, a in arrays.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
            raise ValueError(f"TokenStats needs three 1-D arrays of equal length, got {shapes}")
        pair = (
            float(arrays["true_logprob"].sum(dtype=np.float64)),
            bool(arrays["top1_is_true"].all()),
        )
        stats = super().__new__(cls, pair)
        for name, a in arrays.items():
            a.flags.writeable = False
            object.__setattr__(stats, name, a)
        return stats

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TokenStats is immutable (cannot set {name!r})")

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __getnewargs__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[override]
        return (self.true_logprob, self.top1_logprob, self.top1_is_true)

    @property
    def n(self) -> int:
        """The number of scored positions."""
        return int(self.true_logprob.shape[0])

    def __repr__(self) -> str:
        if self.n == 0:
            return "TokenStats(n=0)"
        total = float(self.true_logprob.sum(dtype=np.float64))
        accuracy = float(self.top1_is_true.mean())
        return f"TokenStats(n={self.n}, sum_true_logprob={total:.4f}, top1_acc={accuracy:.4f})"

    @classmethod
    def concatenate(cls, parts: Sequence["TokenStats"]) -> "TokenStats":
        """The positions of ``parts`` one after another."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.true_logprob for p in parts]),
            np.concatenate([p.top1_logprob for p in parts]),
            np.concatenate([p.top1_is_true for p in parts]),
        )

    def tail(self, k: int) -> "TokenStats":
        """The last ``k`` positions (``1 <= k <= n``)."""
        if k == self.n:
            return self
        return TokenStats(self.true_logprob[-k:], self.top1_logprob[-k:], self.top1_is_true[-k:])


class UnsupportedBackendError(NotImplementedError):
    """The model backend (or its configuration) cannot answer ``token_stats`` requests."""

    __module__ = "calib_tasks.token_stats"
