"""Start-up activation: the package's tasks for the plain ``lm_eval`` command (lm-eval 0.4.13).

lm-eval 0.4.13 finds tasks only in its own folder and in ``--include_path``; it has no plugin
hook. The installed package therefore carries ``lm_eval_calibration.pth``, whose one line
imports this module when the interpreter starts. It does nothing then but put a watcher on
``sys.meta_path`` (the patch ``calib_tasks.patches.START_UP_WATCHER``; no lm_eval, torch, numpy
or logging import: the cost is this small module and the declarations). When the harness imports
``lm_eval.tasks``, the watcher lets the import run and then installs the two ``TaskManager``
patches (``calib_tasks.harness.task_paths.scan_task_dir``): every ``TaskManager`` that indexes
the harness's own tasks (``include_defaults=True``, the default) scans this package's task
folder too, and checks this package's tasks among the names it matches, so ``lm_eval --tasks
calib_mmlu``, ``lm_eval ls tasks``, ``lm_eval validate`` and ``TaskManager()`` know the
package's tasks. A ``TaskManager(include_defaults=False, include_path=P)`` indexes P only, as
without the package. No file of lm_eval is changed.

* ``LM_EVAL_CALIBRATION_ACTIVATE=0`` (or ``false``, ``no``, ``off``) switches it off: the harness
  then behaves exactly as without the package.
* The task folder steps aside when the installed harness discovers ``lm_eval.tasks`` entry
  points itself (lm-eval's task plugins, PR #4015: ``lm_eval.tasks.manager.
  discover_plugin_task_paths``; ``calib_tasks.patches.TASK_PLUGINS``); the package declares that
  entry point.
* It never raises: a failure logs one warning and the harness runs as before.
"""

import os
import sys

from calib_tasks import patches

ENV_VAR = "LM_EVAL_CALIBRATION_ACTIVATE"
OFF_VALUES = ("0", "false", "no", "off")
WATCHED_MODULE = "lm_eval.tasks"


def _logger():  # logging is imported only when there is something to say (start-up cost)
    import logging

    return logging.getLogger(__name__)


def switched_off() -> bool:
    """Whether ``LM_EVAL_CALIBRATION_ACTIVATE`` turns the activation off."""
    return os.environ.get(ENV_VAR, "").strip().lower() in OFF_VALUES


def harness_discovers_task_plugins() -> bool:
    """Whether the imported harness finds ``lm_eval.tasks`` entry points on its own."""
    return patches.upstream(patches.TASK_FOLDER) is not None


def activate() -> None:
    """Install the ``TaskManager`` patches (the task folder stepping aside when the harness
    discovers it itself); never raises (one warning instead)."""
    try:
        from calib_tasks.harness.task_paths import scan_task_dir

        scan_task_dir()
    except Exception as error:  # noqa: BLE001  (the harness must run as before)
        _logger().warning(
            "lm-eval-calibration could not add its tasks to lm_eval (%s: %s); use calib-eval, "
            'or lm_eval --include_path "$(calib-eval --task-dir)"',
            type(error).__name__,
            error,
        )


class _Loader:
    """The harness's loader of ``lm_eval.tasks``, calling ``activate`` once the module ran."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        activate()


class _Watcher:
    """A ``sys.meta_path`` finder that answers only for ``lm_eval.tasks``, once: it finds the
    module's spec with the other finders and wraps its loader (see ``_Loader``)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != WATCHED_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            for finder in sys.meta_path:
                spec = getattr(finder, "find_spec", lambda *_: None)(name, path, target)
                if spec is not None and spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                    return spec
        except Exception as error:  # noqa: BLE001
            _logger().warning(
                "lm-eval-calibration could not watch the import of %s (%s)", name, error
            )
        return None


def install() -> None:
    """Watch for the harness's ``lm_eval.tasks`` (called by the ``.pth`` line at start-up);
    nothing when switched off, and ``activate`` at once when it is already imported."""
    try:
        if switched_off():
            return
        if WATCHED_MODULE in sys.modules:
            activate()
        else:
            patches.add_finder(patches.START_UP_WATCHER, _Watcher())
    except Exception:  # noqa: BLE001  (interpreter start-up must never fail)
        pass


install()
