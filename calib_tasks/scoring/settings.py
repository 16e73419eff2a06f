"""A task's settings: the confidence rules and cross-fitted recalibrators it computes besides
its record kind's plain metrics, read from its ``metadata`` (``calib_rules``,
``calib_recalibration``; see ``confidence_rules`` and ``recalibrators``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calib_tasks.scoring.confidence_methods import GENERATION_SETTINGS, Method, methods_setting
from calib_tasks.scoring.confidence_rules import RULES_SETTING, SUM, Rule, rules_setting
from calib_tasks.scoring.metadata import check_setting_keys
from calib_tasks.scoring.recalibrators import (
    RECALIBRATION_SETTING,
    Recalibrator,
    recalibration_setting,
)
from calib_tasks.scoring.records import GENERATION, MULTICLASS, RecordKind


@dataclass(frozen=True)
class TaskSettings:
    """What a task computes besides its record kind's plain rows: the confidence rules and the
    recalibrators of its settings (``confidence_rules``, ``recalibrators``)."""

    rules: tuple[Rule, ...] = (SUM,)
    recalibrators: tuple[Recalibrator, ...] = ()
    #: The confidence methods of a generative task (``confidence_methods``), in its order.
    methods: tuple[Method, ...] = ()


def task_settings(metadata: Mapping[str, Any] | None, task: str, kind: RecordKind) -> TaskSettings:
    """A task's settings from its ``metadata`` (``calib_rules``, ``calib_recalibration``): an
    error naming rule or recalibrator and task when the task cannot compute it (a rule other
    than ``sum`` on a task that is not multiple choice; see ``recalibration_setting``), and
    naming the key when a ``calib_`` key is none of these (``metadata.check_setting_keys``)."""
    generative = GENERATION_SETTINGS if kind == GENERATION else ()
    check_setting_keys(metadata, (RULES_SETTING, RECALIBRATION_SETTING, *generative), task)
    rules: tuple[Rule, ...] = (SUM,)
    if kind == MULTICLASS or RULES_SETTING in (metadata or {}):  # the default is for MC only
        rules = rules_setting(metadata, task)
    if kind != MULTICLASS and rules != (SUM,):
        raise ValueError(
            f"{task}: confidence rule(s) {[r.name for r in rules if r is not SUM]} of "
            f"{RULES_SETTING} apply to multiple-choice tasks only (this task's records are "
            f"{kind}); set the rules in the multiple-choice tasks' own YAML metadata, or run "
            "them apart"
        )
    methods = methods_setting(metadata, task) if kind == GENERATION else ()
    return TaskSettings(rules, recalibration_setting(metadata, task, kind), methods)


#: The settings of a task whose metadata names none: the sum rule, no recalibrator.
DEFAULT_SETTINGS = TaskSettings()
