"""The log-probability of every generated token on the hf backend, read while the harness's own
``HFLM.generate_until`` generates it, so that the text is the harness's, bit for bit.

``recording(lm)`` wraps, on the one ``HFLM`` instance and for the duration of a ``with`` block,
its ``tok_batch_encode`` (to learn the contexts of each batch) and ``_model_generate`` (which
then runs with a forward hook on the model). At each decoding step the hook keeps the
log-softmax of the model's last-position logits (``[B, V]``, in the backend's ``softmax_dtype``)
and, at the next step, gathers from it the token that was chosen (the step's input), so memory
stays ``O(B x V)`` however many steps (transformers' ``output_scores`` would keep ``V x steps``).
The logits are the model's own (after its final soft-capping, before any logits processor), so
the numbers are the model's distribution whatever the sampling settings.

``Recorder.scores(context, text)`` then gives the kept tokens of the generation that produced
``text`` after ``context``: the shortest token prefix whose decoded text covers ``text`` (the
harness cuts its text at the first stop sequence), or the first token when ``text`` is empty;
with each token's log-probability and where it ends in the text. None when no recorded
generation matches (the harness changed the text otherwise, e.g. stripped thinking tokens).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TokenScores:
    """The kept tokens of one generation: each one's log-probability and the character offset in
    the generated text where it ends."""

    logprobs: tuple[float, ...]
    ends: tuple[int, ...]


class _StepHook:
    """A forward hook that turns each decoding step into the chosen token's log-probability."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []
        #: A step whose rows are not the previous step's (no token ids, another batch size).
        self.broken = False

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        chosen = kwargs.get("input_ids")
        if self.previous is not None and not self.broken:
            if chosen is None or chosen.shape[0] != self.previous.shape[0]:
                self.broken = True
            else:
                self.steps.append(self.previous.gather(1, chosen[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(logits[:, -1, :].to(self.dtype), dim=-1)

    def finish(self, sequences: torch.Tensor) -> torch.Tensor | None:
        """``[B, steps]`` log-probabilities of the generated tokens of ``sequences`` (the last one
        gathered from the last step), None when no step ran or the steps ran on other rows than
        ``sequences`` (beam search runs ``B x num_beams`` rows and returns ``B``)."""
        if self.previous is None or self.broken or self.previous.shape[0] != sequences.shape[0]:
            return None
        self.steps.append(self.previous.gather(1, sequences[:, -1:]).squeeze(1))
        return torch.stack(self.steps, dim=1).float().cpu()


class Recorder:
    """The generations of one ``recording`` block, by context."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._contexts: list[str] = []
        self._generations: dict[str, list[tuple[list[int], list[float]]]] = defaultdict(list)

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> Any:
        self._contexts = list(strings)
        return type(self.lm).tok_batch_encode(self.lm, strings, *args, **kwargs)

    def model_generate(self, context: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        hook = _StepHook(self.lm.softmax_dtype or torch.float32)
        handle = self.lm.model.register_forward_hook(hook, with_kwargs=True)
        try:
            out = type(self.lm)._model_generate(self.lm, context, *args, **kwargs)
        finally:
            handle.remove()
        generated = out[:, context.shape[1] :]
        logprobs = hook.finish(out)
        if (
            logprobs is None
            or logprobs.shape != generated.shape
            or generated.shape[0] != len(self._contexts)
        ):
            return out  # steps, tokens and contexts disagree (beam search): no record
        for row, text in enumerate(self._contexts):
            self._generations[text].append((generated[row].tolist(), logprobs[row].tolist()))
        return out

    def scores(self, context: str, text: str) -> TokenScores | None:
        """The kept tokens of the recorded generation of ``text`` after ``context`` (module
        docstring), or None."""
        candidates = self._generations.get(context, [])
        for index, (tokens, logprobs) in enumerate(candidates):
            ends, decoded = self._ends(tokens, len(text) + 1)
            if not decoded.startswith(text):
                continue
            kept = next((k + 1 for k, end in enumerate(ends) if end >= len(text)), None)
            if kept is None:
                continue
            del candidates[index]  # each generation is matched once (sampled twins of a context)
            return TokenScores(
                tuple(logprobs[:kept]), tuple(min(e, len(text)) for e in ends[:kept])
            )
        return None

    def _ends(self, tokens: list[int], enough: int) -> tuple[list[int], str]:
        """Where each token's decoded text ends, up to the first that reaches ``enough``
        characters (never decreasing: a prefix that ends inside a character decodes shorter),
        and the text of those tokens."""
        ends: list[int] = []
        decoded = ""
        for k in range(1, len(tokens) + 1):
            decoded = self.lm.tok_decode(tokens[:k])
            ends.append(max(len(decoded), ends[-1] if ends else 0))
            if ends[-1] >= enough:
                break
        return ends, decoded


@contextlib.contextmanager
def recording(lm: Any) -> Iterator[Recorder]:
    """Record the token log-probabilities of the generations ``lm`` (an ``HFLM``) makes inside
    the block (module docstring)."""
    recorder = Recorder(lm)
    lm.tok_batch_encode = recorder.tok_batch_encode
    lm._model_generate = recorder.model_generate
    try:
        yield recorder
    finally:
        del lm.tok_batch_encode
        del lm._model_generate
