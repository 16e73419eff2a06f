"""The ``token_stats`` request type: per-position token statistics from the harness's own backends.

A request ``Instance(request_type="token_stats", doc=..., arguments=(context, continuation),
idx=...)`` asks for one :class:`TokenStats` covering the tokens of ``continuation``:

* ``context == ""``: ``continuation`` is a document scored exactly like the backend's
  ``loglikelihood_rolling`` scores it: same ``tok_encode``, same prefix token, same disjoint rolling
  windows (``utils.get_rolling_token_windows(..., context_len=1)`` + ``make_disjoint_window``) of
  the backend's window length. Every token is scored, the first one given the prefix token, and a
  document of N tokens costs ceil(N / window) windows.
* ``context != ""``: only the continuation tokens are scored, with the context/continuation split
  of the backend's ``loglikelihood`` (``_encode_pair``) and its left truncation to the window.
  Whitespace ending the context, which ``_encode_pair`` moves into the continuation, stays
  context: its tokens are conditioned on, not scored. So position 0 is the first token of the
  continuation text also under ``--apply_chat_template``, whose prompt ends with a newline.

So ``sum(true_logprob)`` is the backend's ``loglikelihood_rolling`` (resp. ``loglikelihood``, for
a context without trailing whitespace) value, and ``all(top1_is_true)`` its ``is_greedy``.

Importing this package installs ``token_stats(self, requests, disable_tqdm=False)`` on the class
of every backend of ``BACKENDS``, one module and one :class:`BackendSpec` each:

* ``hf`` (``hf.py``, ``lm_eval.models.huggingface.HFLM``): log-softmax of the forward pass on the
  backend's device, top-1 over the whole output vocabulary, the backend's batch size, data
  parallel;
* ``vllm`` (``vllm.py``, ``lm_eval.models.vllm_causallms.VLLM``): ``prompt_logprobs=1`` (the true
  token and the top-1 token at every prompt position); installed at import when that module is
  already loaded, otherwise on first use (vllm is imported only by the harness, never here);
* ``local-completions`` (``completions.py``, ``lm_eval.models.openai_completions.
  LocalCompletionsAPI``): ``echo=True, logprobs=1, max_tokens=1`` completions requests of
  ``batch_size`` windows (the generated token is dropped), after an alignment self-check of the
  server's echo;

and a default on ``lm_eval.api.model.LM`` that raises :class:`UnsupportedBackendError`. The
evaluator dispatches with ``getattr(lm, "token_stats")(requests)``; ``CachingLM`` (``--use_cache``)
passes the method through uncached. Installation is idempotent and touches no existing method
(the patches ``TOKEN_STATS_DEFAULT`` and ``TOKEN_STATS`` of :mod:`calib_tasks.patches`).
:func:`check_backend` raises, without sending a request, the error a backend's ``token_stats``
would raise for its configuration.

The windows are planned once for every backend (``windows.py``) from the two window lengths of
its spec. The response parsers :func:`stats_from_prompt_logprobs` (vLLM) and
:func:`stats_from_completion_logprobs` / :func:`parse_completions_response` (OpenAI completions)
are pure functions of the response objects.
"""

# No ``from __future__ import annotations`` in this package: a module run before it is in
# sys.modules (the harness's ``!function`` file loader runs files so, and the installation test
# loads this file so under another name) cannot define dataclasses with string annotations. This
# file imports the package's modules absolutely, so such a copy shares them.
from calib_tasks.token_stats.backends import BACKENDS, SUPPORTED_BACKENDS, check_backend, install
from calib_tasks.token_stats.completions import completions_token_stats
from calib_tasks.token_stats.completions_response import (
    parse_completions_response,
    stats_from_completion_logprobs,
)
from calib_tasks.token_stats.hf import hf_token_stats
from calib_tasks.token_stats.spec import BackendSpec
from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats, UnsupportedBackendError
from calib_tasks.token_stats.vllm import stats_from_prompt_logprobs, vllm_token_stats
from calib_tasks.token_stats.windows import describe_request

__all__ = [
    "BACKENDS",
    "REQUEST_TYPE",
    "SUPPORTED_BACKENDS",
    "BackendSpec",
    "TokenStats",
    "UnsupportedBackendError",
    "check_backend",
    "completions_token_stats",
    "describe_request",
    "hf_token_stats",
    "install",
    "parse_completions_response",
    "stats_from_completion_logprobs",
    "stats_from_prompt_logprobs",
    "vllm_token_stats",
]

install()
