"""An hf model's logits at the positions that are scored, from its final hidden states.

The harness's ``HFLM._model_call`` returns the logits of every position of a batch,
``[B, T, V]``: at a 262,144-token vocabulary and an 8,192-token window that is 8.6 GB of float32
per row. Here the same forward pass runs with a pre-hook on the model's output embeddings module
(``get_output_embeddings()``, the ``lm_head``): the hook keeps the final hidden states ``h``
(``[B, T, H]``) and hands the module only the last position, so the model computes logits
``[B, 1, V]``. The logits of the scored positions are then computed chunk by chunk,

    logits[b, t] = transform(lm_head(h[b, t]))

where ``transform`` is what the model's config applies after the projection (see
``LOGIT_TRANSFORMS``). Extra memory: O(B·T·H + chunk·V) instead of O(B·T·V).

Every batch checks the split against the model itself: the model's own logits at the last
position must equal ``transform(lm_head(h[:, -1]))`` to rounding. A model that never calls its
output embeddings module, or whose logits differ (it applies something after the projection that
is not in ``LOGIT_TRANSFORMS``), is scored from the full logits of ``_model_call``, as before,
with one log line saying so and why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from calib_tasks.token_stats.types import REQUEST_TYPE

eval_logger = logging.getLogger(__name__)

#: What models apply to ``lm_head``'s output, by the config field that sets it (absent or None:
#: not applied): final logit soft-capping (Gemma 2, Gemma 3, ...: ``c * tanh(x / c)``), Cohere's
#: ``logit_scale`` (``x * s``) and Granite's ``logits_scaling`` (``x / s``).
LOGIT_TRANSFORMS: dict[str, Callable[[Any, float], Any]] = {
    "final_logit_softcapping": lambda x, c: (x / c).tanh() * c,
    "logit_scale": lambda x, s: x * s,
    "logits_scaling": lambda x, s: x / s,
}


def _backbone(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def _transforms(model: Any) -> list[tuple[Callable[[Any, float], Any], float]]:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    found = []
    for key, transform in LOGIT_TRANSFORMS.items():
        value = getattr(config, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((transform, float(value)))
    return found


class FullLogits:
    """The logits of every position, as ``_model_call`` returns them (``[B, T', V]``)."""

    def __init__(self, logits: Any) -> None:
        self.logits = logits
        self.length = int(logits.shape[1])
        self.vocab_size = int(logits.shape[-1])
        self.device = logits.device

    def rows(self, row: Any, position: Any) -> Any:
        """``logits[row[i], position[i]]`` for every i: ``[m, V]``."""
        return self.logits[row, position]


class SplitLogits:
    """The final hidden states of a batch (``[B, T', H]``) and how to make them logits, which
    come on ``device``, the device of the model's own logits (the head may sit on another one,
    and the hidden states on a third, when the model is spread over several devices)."""

    def __init__(
        self, hidden: Any, project: Callable[[Any], Any], vocab_size: int, device: Any
    ) -> None:
        self.hidden = hidden
        self.project = project
        self.length = int(hidden.shape[1])
        self.vocab_size = vocab_size
        self.device = device

    def rows(self, row: Any, position: Any) -> Any:
        """The logits at ``(row[i], position[i])`` for every i: ``[m, V]``, computed now."""
        at = self.hidden.device
        return self.project(self.hidden[row.to(at), position.to(at)]).to(self.device)


@dataclass
class _Capture:
    hidden: Any = None
    calls: int = 0


class Projection:
    """Forward passes of one ``token_stats`` call on an hf model: split when the model allows
    it (``split``), else (or once a batch has shown the split to be wrong) full logits."""

    def __init__(self, lm: Any, *, split: bool = True) -> None:
        self.lm = lm
        self.model = _backbone(lm.model)
        self.transforms = _transforms(self.model)
        self.head = None
        self.split = split
        if split:
            try:
                self.head = self.model.get_output_embeddings()
            except (AttributeError, NotImplementedError) as error:
                self._fall_back(f"its output embeddings module cannot be found ({error!r})")
                return
            if self.head is None:
                self._fall_back("the model has no output embeddings module")

    def _fall_back(self, why: str) -> None:
        self.split = False
        eval_logger.warning(
            "%s: computing the full [batch, window, vocabulary] logits of %s (memory "
            "O(B*T*V)) instead of projecting its hidden states chunk by chunk: %s",
            REQUEST_TYPE,
            type(self.model).__name__,
            why,
        )

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        """The no-grad, autocast context of ``HFLM._model_call``."""
        import torch

        dtype = getattr(self.lm, "mixed_precision_dtype", None)
        with (
            torch.no_grad(),
            torch.autocast(device_type=self.lm.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            yield

    def _project(self, hidden: Any, dtype: Any) -> Any:
        with self._precision():
            logits = self.head(hidden).to(dtype)
            for transform, value in self.transforms:
                logits = transform(logits, value)
        return logits

    def forward(self, batch: Any) -> FullLogits | SplitLogits:
        """The model's forward pass over ``batch`` (``[B, T]`` token ids, right-padded) through
        ``lm._model_call``; its logits as full logits or as hidden states to project."""
        if not self.split:
            return FullLogits(self.lm._model_call(batch))
        from accelerate.utils.memory import should_reduce_batch_size

        capture = _Capture()

        def keep_last_position(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not args:  # not called with the hidden states as its first argument
                return None
            capture.calls += 1
            capture.hidden = args[0]
            return (args[0][:, -1:], *args[1:])

        handle = self.head.register_forward_pre_hook(keep_last_position)
        try:
            try:
                own = self.lm._model_call(batch)
            finally:
                handle.remove()
            if capture.calls == 1:
                own_last = own[:, -1]
                mine = self._project(capture.hidden[:, -1], own.dtype).to(own_last.device)
        except Exception as error:
            if should_reduce_batch_size(error):  # out of memory: for the caller to handle
                raise
            self._fall_back(
                "its forward pass, with the output embeddings module given the last position "
                f"only, or the projection of its hidden states failed ({type(error).__name__}: "
                f"{error})"
            )
            return FullLogits(self.lm._model_call(batch))
        if capture.calls != 1:
            self._fall_back(
                "its forward pass never called the output embeddings module "
                f"{type(self.head).__name__} on the hidden states"
                if capture.calls == 0
                else f"its forward pass called the output embeddings module {capture.calls} times"
            )
            return FullLogits(own if capture.calls == 0 else self.lm._model_call(batch))
        problem = _mismatch(mine, own_last)
        if problem is not None:
            self._fall_back(problem)
            return FullLogits(self.lm._model_call(batch))
        hidden, dtype = capture.hidden, own.dtype
        return SplitLogits(
            hidden, lambda h: self._project(h, dtype), int(own.shape[-1]), own.device
        )


# units of float32 rounding the split may differ from the model's own logits by
_FLOAT32_UNITS = 16


def _mismatch(mine: Any, own: Any) -> str | None:
    """None when the projected logits equal the model's own to rounding, row by row:
    ``max(16 * eps(float32), eps(dtype)) * max(1, max |row|)``, 16 units of float32 or one unit
    of the logits' dtype when that is coarser, relative to the row's largest logit (the two come
    from the same product of the same shape; an adapter on the head, such as LoRA's, adds its
    terms in another order); else how they differ."""
    import torch

    if mine.shape != own.shape:
        return f"its logits have shape {tuple(own.shape)}, the projection {tuple(mine.shape)}"
    own_values = own.float()
    difference = (mine.float() - own_values).abs()
    unit = max(_FLOAT32_UNITS * torch.finfo(torch.float32).eps, torch.finfo(own.dtype).eps)
    allowed = unit * own_values.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    if bool((difference <= allowed).all()):
        return None
    return (
        "its own logits differ from the projection of its hidden states by up to "
        f"{float(difference.nan_to_num(nan=float('inf')).max()):.3g} (it transforms the logits "
        f"in a way this package does not know; known: {', '.join(LOGIT_TRANSFORMS)})"
    )
