"""A backend's declaration, :class:`BackendSpec`, and the method that derives from it."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lm_eval.api.instance import Instance

from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats, UnsupportedBackendError
from calib_tasks.token_stats.windows import Plan, assemble, plan_windows


@dataclass(frozen=True)
class BackendSpec:
    """How one harness backend answers ``token_stats`` requests.

    Attributes:
        name: the harness's model name (``--model``).
        class_path: ``"module.Class"``, the backend class ``token_stats`` is installed on.
        check: ``check(lm)`` raises UnsupportedBackendError (:func:`unsupported`) for a
            configuration of ``lm`` the backend cannot serve, and sends no request.
        rolling_max_seq_len: ``rolling_max_seq_len(lm)``, the ``max_seq_len`` the backend's
            ``loglikelihood_rolling`` passes to ``get_rolling_token_windows``.
        seq_cap: ``seq_cap(lm)``, the longest sequence (context + continuation) the backend's
            ``_loglikelihood_tokens`` keeps after left truncation.
        score: ``score(lm, plan, disable_tqdm)``, the statistics of the scored tokens of every
            window of ``plan``, in window order.
        lazy: the class's module is never imported here (it imports an inference engine); the
            method is installed once the harness has imported that module: at installation if
            it has, else when an instance first calls or checks ``token_stats``.
        token_stats: derived, the method installed as ``token_stats(self, requests,
            disable_tqdm=False)``: ``check``, the windows of ``plan_windows`` with the backend's
            two lengths, ``score``, and one TokenStats per request, in request order.
    """

    name: str
    class_path: str
    check: Callable[[Any], None]
    rolling_max_seq_len: Callable[[Any], int]
    seq_cap: Callable[[Any], int]
    score: Callable[[Any, Plan, bool], Sequence[TokenStats | None]]
    lazy: bool = False
    token_stats: Callable[..., list[TokenStats]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = self

        def token_stats(
            self: Any, requests: list[Instance], disable_tqdm: bool = False
        ) -> list[TokenStats]:
            spec.check(self)
            plan = plan_windows(
                self,
                requests,
                rolling_max_seq_len=spec.rolling_max_seq_len(self),
                seq_cap=spec.seq_cap(self),
            )
            return assemble(plan, spec.score(self, plan, disable_tqdm))

        token_stats.__qualname__ = f"{self.class_path.rpartition('.')[2]}.{REQUEST_TYPE}"
        token_stats.__doc__ = (
            f"``{REQUEST_TYPE}`` of the {self.name!r} backend ({self.class_path}): one TokenStats "
            "per request, in request order (see calib_tasks.token_stats.spec.BackendSpec and "
            f"{self.score.__module__}.{self.score.__qualname__})."
        )
        object.__setattr__(self, "token_stats", token_stats)


def unsupported(lm: object, why: str = "") -> UnsupportedBackendError:
    """The error for a backend that cannot answer ``token_stats`` (``why``: for this reason),
    naming ``lm``'s class and every backend of ``BACKENDS``."""
    from calib_tasks.token_stats.backends import BACKENDS  # (imports the backends, which import us)

    cls = type(lm)
    reason = f": {why}" if why else ""
    supported = ", ".join(f"{spec.name} ({spec.class_path})" for spec in BACKENDS)
    return UnsupportedBackendError(
        f"model backend {cls.__module__}.{cls.__qualname__} cannot answer {REQUEST_TYPE!r} "
        "requests (per-token log-probabilities with the top-1 token over the whole "
        f"vocabulary){reason}. Supported backends: {supported}."
    )
