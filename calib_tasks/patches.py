"""Every change this package makes to lm-eval 0.4.13 in a running process, declared in one place,
and the one way they are installed.

lm-eval 0.4.13 has no plugin hook for tasks, request types or pre-run checks, so the package
changes a few of the harness's functions and classes while a process runs (no file of lm_eval is
changed). Each change is one :class:`Patch` below: its target, why it exists, when it is
installed, and the upstream change that retires it. ``PATCHES`` lists them all;
``calib-eval --patches`` prints them with what is installed in that process (``state``).

The code of a patch lives with its logic (the ``where`` of each declaration) and installs it
through this module, the only place that changes the harness:

* ``wrap(patch, owner, name, factory)`` replaces ``owner.name`` by ``factory(original)``;
* ``add(patch, owner, name, function)`` adds a method ``owner`` does not have (refusing to
  replace one this package did not add);
* ``add_finder(patch, finder)`` puts an import finder first on ``sys.meta_path``.

Each marks what it installs with ``MARK`` (the attribute holds the Patch), so that an
installation is done once per process, whoever asks for it again (idempotent), and ``marked``
tells what this package installed. The original of a wrapped function stays reachable
(``original``, and ``__wrapped__`` where the factory uses ``functools.wraps``). A patch that
declares ``steps_aside_for`` is not installed when the imported harness has that upstream
replacement (lm-eval's own discovery of ``lm_eval.tasks`` entry points, PR #4015).

To add a patch: declare it here (a ``Patch`` constant, listed in ``PATCHES``), and install it
where its logic lives with ``wrap``, ``add`` or ``add_finder``; an undeclared one is refused.

Not patches: the calibration aggregations are registered through the harness's own registry
(``calib_tasks.harness.aggregations``; the ``lm_eval.aggregations`` entry points of PR #4014,
merged after 0.4.13, are declared in pyproject.toml).

Imported at every interpreter start (by ``calib_tasks.harness.activation``): it imports only
``sys``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (typing is not imported at start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

MARK = "__calib_patch__"
# What lm-eval's task plugins (PR #4015) add to lm_eval.tasks.manager.
TASK_PLUGINS = ("lm_eval.tasks.manager", ("discover_plugin_task_paths", "TASKS_ENTRY_POINT_GROUP"))


class Patch:
    """One declared change to the harness.

    Attributes:
        target: what is changed, as a dotted path.
        why: what the package needs it for.
        when: when it is installed in a process, and by which code (``where``).
        retired_by: the upstream change that makes it unneeded (or that none is known).
        where: the module whose code installs it.
        steps_aside_for: ``(module, names)``: not installed when the imported harness module
            has one of ``names`` (the upstream replacement).
    """

    __slots__ = ("target", "why", "when", "retired_by", "where", "steps_aside_for")

    def __init__(
        self,
        target: str,
        *,
        why: str,
        when: str,
        retired_by: str,
        where: str,
        steps_aside_for: tuple[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.target = target
        self.why = why
        self.when = when
        self.retired_by = retired_by
        self.where = where
        self.steps_aside_for = steps_aside_for

    def __repr__(self) -> str:
        return f"Patch({self.target!r})"


START_UP_WATCHER = Patch(
    "sys.meta_path",
    why="lm-eval 0.4.13 finds tasks only in its own folder and --include_path: a finder that "
    "waits for the harness's import of lm_eval.tasks and then installs the two TaskManager "
    "patches, so that the plain lm_eval command knows the package's tasks; it imports nothing "
    "before that, and removes itself once it has seen the import",
    when="at interpreter start, by the line of lm_eval_calibration.pth (written by setup.py); "
    "not with LM_EVAL_CALIBRATION_ACTIVATE=0",
    retired_by="lm-eval PR #4015 (lm_eval.tasks entry points, open; the package declares "
    "one): the harness then finds the tasks itself",
    where="calib_tasks.harness.activation",
)
TASK_FOLDER = Patch(
    "lm_eval.tasks.TaskManager.__init__",
    why="a task manager that indexes the harness's tasks (include_defaults=True) also scans "
    "the package's task folder, after the harness's tasks and before the caller's "
    "include_path; include_defaults=False keeps meaning 'only these paths', and include_path "
    "stays as the caller gave it; within calib-eval's package_tasks_only, the harness's own "
    "folder is not scanned",
    when="when the harness imports lm_eval.tasks (start-up watcher), and by calib-eval",
    retired_by="lm-eval PR #4015 (open): the harness scans the folder of each lm_eval.tasks "
    "entry point itself; this patch steps aside when it does",
    where="calib_tasks.harness.task_paths",
    steps_aside_for=TASK_PLUGINS,
)
TASK_CHECK = Patch(
    "lm_eval.tasks.TaskManager.match_tasks",
    why="the names it matches (lm_eval run and validate resolve --tasks with it, before the "
    "model loads) are checked for package tasks whose config cannot make a task (a wrapper of a "
    "group, a misspelt calib_ setting), which then fail there, not after the model has loaded",
    when="with lm_eval.tasks.TaskManager.__init__ (also where that one steps aside)",
    retired_by="none known: the harness has no hook that checks a task's config when its name "
    "is resolved",
    where="calib_tasks.harness.task_paths",
)
PACKAGE_TASKS_ONLY = Patch(
    "lm_eval.config.evaluate_config.EvaluatorConfig.process_tasks",
    why="when --tasks names only the package's tasks and there is no --include_path, the task "
    "managers built while the CLI resolves them skip the harness's own task folder (thousands "
    "of YAML files, ~12 s to index on a 2-core CPU)",
    when="by calib-eval, before it runs the harness's CLI",
    retired_by="none known (a harness that indexes its task folder lazily); it works through "
    "the TaskManager.__init__ patch, so it steps aside with it (lm-eval PR #4015)",
    where="calib_tasks.command_line.eval",
    steps_aside_for=TASK_PLUGINS,
)
PREFLIGHT = Patch(
    "lm_eval.evaluator.evaluate",
    why="checks the backend against the run's token_stats tasks before the first request: the "
    "evaluator runs one request type after another, so a backend that cannot answer token_stats "
    "would fail only after every other request type of the run had finished",
    when="when the first calib task module loads (calib_tasks.tasks.base)",
    retired_by="none known: the harness does not check that its backend answers every request "
    "type of a run before it starts",
    where="calib_tasks.harness.preflight",
)
TOKEN_STATS_DEFAULT = Patch(
    "lm_eval.api.model.LM.token_stats",
    why="the token_stats request type (per-token log-probabilities with the top-1 token over the "
    "vocabulary) is no request type of the harness: every backend without one of its own "
    "(dummy, ...) refuses it with an error naming the backends that answer it",
    when="when calib_tasks.token_stats is imported (the calib tasks import it)",
    retired_by="none known: the harness has no way to add a request type",
    where="calib_tasks.token_stats.backends",
)
TOKEN_STATS = Patch(
    "lm_eval.models.<backend>.token_stats",
    why="token_stats on the harness's own backends, one calib_tasks.token_stats.BackendSpec "
    "each: hf (huggingface.HFLM), local-completions (openai_completions.LocalCompletionsAPI), "
    "vllm (vllm_causallms.VLLM: once the harness has imported that module, which the package "
    "never imports); the evaluator dispatches with getattr(lm, 'token_stats')",
    when="when calib_tasks.token_stats is imported; vllm's at its first token_stats call or "
    "check if the harness imports its module later",
    retired_by="lm-eval PR #4013 (lm_eval.models entry points and --plugins, merged after "
    "0.4.13), in part: backends of the package's own, registered under model names of their "
    "own, instead of methods added to hf, vllm and local-completions",
    where="calib_tasks.token_stats.backends",
)

CALIB_GENERATE = Patch(
    "lm_eval.api.model.LM.calib_generate",
    why="the calib_generate request type (a generated answer with the numbers of its confidence "
    "methods: token log-probabilities, P(True), a verbalized confidence) composed from the "
    "backend's own generate_until, loglikelihood and token_stats, so that every backend has it; "
    "the follow-up requests depend on the generated text, which the harness's build-every-"
    "request-first evaluator cannot express",
    when="when calib_tasks.generation is imported (the generative calib tasks import it)",
    retired_by="none known: the harness has no way to add a request type, nor requests that "
    "depend on another's answer",
    where="calib_tasks.generation.request",
)

PATCHES: tuple[Patch, ...] = (
    START_UP_WATCHER,
    TASK_FOLDER,
    TASK_CHECK,
    PACKAGE_TASKS_ONLY,
    PREFLIGHT,
    TOKEN_STATS_DEFAULT,
    TOKEN_STATS,
    CALIB_GENERATE,
)

# Where each patch was installed in this process: (patch, owner, name, original); owner None
# for a finder (then name is the finder).
_installed: list[tuple[Patch, object, object, object]] = []


def marked(obj: object) -> Patch | None:
    """The patch that installed ``obj`` (a function, method or finder), None if none did."""
    patch = getattr(obj, MARK, None)
    return patch if isinstance(patch, Patch) else None


def upstream(patch: Patch) -> str | None:
    """The upstream replacement of ``patch`` that the imported harness has (``module.name``),
    or None; a module that is not imported has none."""
    if patch.steps_aside_for is None:
        return None
    module_name, names = patch.steps_aside_for
    module = sys.modules.get(module_name)
    found = [name for name in names if hasattr(module, name)] if module is not None else []
    return f"{module_name}.{found[0]}" if found else None


def _check_declared(patch: Patch) -> None:
    if not any(patch is declared for declared in PATCHES):
        raise ValueError(f"{patch!r} is not declared in calib_tasks.patches.PATCHES")


def _install(patch: Patch, owner: object, name: str, new: object, original: object) -> None:
    setattr(new, MARK, patch)
    setattr(owner, name, new)
    _installed.append((patch, owner, name, original))


def wrap(patch: Patch, owner: object, name: str, factory: Callable[[object], object]) -> bool:
    """Replace ``owner.name`` (a class's or module's own attribute) by ``factory(original)``,
    marked as ``patch``'s, unless it is already (then nothing changes) or the harness has the
    patch's upstream replacement. Whether the patch is in place afterwards."""
    _check_declared(patch)
    current = vars(owner)[name]
    if marked(current) is patch:
        return True
    if upstream(patch) is not None:
        return False
    _install(patch, owner, name, factory(current), current)
    return True


def add(patch: Patch, owner: type, name: str, function: Callable[..., object]) -> None:
    """Give the class ``owner`` the method ``function`` as ``name``, marked as ``patch``'s;
    nothing if it has one this package added. RuntimeError if it has one of its own."""
    _check_declared(patch)
    existing = vars(owner).get(name)
    if existing is None:
        _install(patch, owner, name, function, None)
    elif marked(existing) is None:
        raise RuntimeError(
            f"{owner.__module__}.{owner.__qualname__} already has a {name!r} attribute that "
            "calib_tasks did not install; refusing to replace it"
        )


def add_finder(patch: Patch, finder: object) -> None:
    """Put the import finder ``finder`` first on ``sys.meta_path``, marked as ``patch``'s,
    unless one of ``patch`` is there already."""
    _check_declared(patch)
    if not any(marked(other) is patch for other in sys.meta_path):
        setattr(finder, MARK, patch)
        sys.meta_path.insert(0, finder)
        _installed.append((patch, None, finder, None))


def original(patch: Patch, owner: object, name: str) -> object:
    """What ``patch`` replaced at ``owner.name`` (None for an added method); KeyError if it
    did not install anything there in this process."""
    for installed, where, attribute, replaced in reversed(_installed):
        if installed is patch and where is owner and attribute == name:
            return replaced
    raise KeyError(f"{patch!r} installed nothing at {owner!r}.{name}")


def _place(owner: object, name: object) -> str:
    """``owner.name`` as a dotted path (owner a class or a module; None: ``sys.meta_path``)."""
    if owner is None:
        return "sys.meta_path"
    if isinstance(owner, type):
        return f"{owner.__module__}.{owner.__qualname__}.{name}"
    return f"{owner.__name__}.{name}"  # type: ignore[attr-defined]


def places(patch: Patch) -> tuple[list[str], list[str]]:
    """Where ``patch`` was installed in this process: the places that still hold what it
    installed, and those that no longer do (a finder removed itself; a test undid it)."""
    holding: list[str] = []
    gone: list[str] = []
    for installed, owner, name, _ in _installed:
        if installed is not patch:
            continue
        if owner is None:
            still = name in sys.meta_path
        else:
            still = marked(vars(owner).get(name)) is patch  # type: ignore[arg-type]
        place = _place(owner, name)
        target = holding if still else gone
        if place not in holding + gone:
            target.append(place)
    return holding, gone


def state(patch: Patch) -> str:
    """``patch``'s state in this process, in words: installed (where), or not (why not)."""
    holding, gone = places(patch)
    parts = []
    if holding:
        parts.append("installed: " + ", ".join(holding))
    if gone:
        parts.append("installed earlier, no longer in place: " + ", ".join(gone))
    if parts:
        return "; ".join(parts)
    replacement = upstream(patch)
    if replacement is not None:
        return f"not installed: the harness has {replacement}"
    return "not installed"
