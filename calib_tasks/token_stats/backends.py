"""The backends that answer ``token_stats``, their installation and :func:`check_backend`.

Every backend is one :class:`BackendSpec` in :data:`BACKENDS`; the supported-backends list of
:func:`~calib_tasks.token_stats.spec.unsupported`, :func:`install` and :func:`check_backend`
read nothing else. The methods are installed as the patches ``TOKEN_STATS_DEFAULT`` (on ``LM``)
and ``TOKEN_STATS`` (on each backend's class) of :mod:`calib_tasks.patches`.
"""

import importlib
import logging
import sys
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, CachingLM

from calib_tasks import patches
from calib_tasks.token_stats.completions import COMPLETIONS
from calib_tasks.token_stats.hf import HF
from calib_tasks.token_stats.spec import BackendSpec, unsupported
from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats
from calib_tasks.token_stats.vllm import VLLM

eval_logger = logging.getLogger(__name__)

BACKENDS: tuple[BackendSpec, ...] = (HF, VLLM, COMPLETIONS)
# harness model name -> backend class that implements the request
SUPPORTED_BACKENDS: dict[str, str] = {spec.name: spec.class_path for spec in BACKENDS}


def _install_backend(spec: BackendSpec) -> None:
    """Install ``spec.token_stats`` on its class if the class's module is imported, or (not
    ``spec.lazy``) imports; a module that fails to import is left out (logged at debug level)."""
    module_name, _, class_name = spec.class_path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None and not spec.lazy:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # e.g. the harness's api extra is missing
            eval_logger.debug("%s not available for %s: %s", spec.name, REQUEST_TYPE, error)
    if module is not None:
        owner = getattr(module, class_name)
        patches.add(patches.TOKEN_STATS, owner, REQUEST_TYPE, spec.token_stats)


def _install_lazy() -> None:
    """Install the lazy backends whose modules the harness imported after this package."""
    for spec in BACKENDS:
        if spec.lazy:
            _install_backend(spec)


def _lm_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """Default ``LM.token_stats``: unsupported, except for a lazy backend whose module was
    imported after this package (then its method is installed and used)."""
    _install_lazy()
    method = getattr(type(self), REQUEST_TYPE)
    if method is not _lm_token_stats:
        return method(self, requests, disable_tqdm=disable_tqdm)
    raise unsupported(self)


def check_backend(lm: object) -> None:
    """Raise UnsupportedBackendError if ``lm`` cannot answer ``token_stats`` requests.

    The error is the one ``lm.token_stats(requests)`` would raise: for a backend without the
    request type (the harness's default, e.g. ``dummy``), and for a configuration its
    ``token_stats`` refuses (its backend's ``BackendSpec.check``: seq2seq or multimodal hf
    models, multimodal vLLM, the completions backends that cannot echo log-probabilities). A
    ``CachingLM`` (``--use_cache``) is checked as the model it wraps; a ``token_stats`` this
    package did not install is trusted. Sends no request (the completions alignment self-check
    runs with a call's first request).
    """
    while isinstance(lm, CachingLM):
        lm = lm.lm
    _install_lazy()
    method = getattr(type(lm), REQUEST_TYPE, None)
    if method is None or method is _lm_token_stats:
        raise unsupported(lm)
    for spec in BACKENDS:
        if method is spec.token_stats:
            spec.check(lm)


def install() -> None:
    """Install ``token_stats`` on ``LM`` (the refusing default) and on every backend class of
    ``BACKENDS`` that is imported or, not lazy, importable (idempotent; done at import).

    Raises RuntimeError for a class whose ``token_stats`` this package did not install.
    """
    patches.add(patches.TOKEN_STATS_DEFAULT, LM, REQUEST_TYPE, _lm_token_stats)
    for spec in BACKENDS:
        _install_backend(spec)
