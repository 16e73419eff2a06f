"""The calib-study points of a tuning: the base model (epoch 0) and every checkpoint."""

from __future__ import annotations

from pathlib import Path

from calib_tasks.study.spec import PointSpec
from calib_tasks.tune.base_model import BaseModel
from calib_tasks.tune.train import CHAINED, is_lora

EVAL_DTYPE = "float32"


def checkpoint_points(
    base: BaseModel, checkpoints: dict[str, list[Path]]
) -> list[tuple[str, int, PointSpec]]:
    """(method, epoch, point) for the base model (method ``base``, epoch 0) and for every
    checkpoint: a full checkpoint is a model of its own, a LoRA checkpoint a ``peft`` adapter
    on the base model. A chained method's epochs count on from its SFT run's last epoch. Every
    point is evaluated in float32, the precision it was trained in."""
    points = [("base", 0, PointSpec("base", base.model, base.revision, dtype=EVAL_DTYPE))]
    for method, folders in checkpoints.items():
        sft = CHAINED.get(method)  # type: ignore[call-overload]
        first = 1 + (len(checkpoints[sft]) if sft else 0)
        for epoch, folder in enumerate(folders, start=first):
            name = f"{method}-epoch{epoch}"
            if is_lora(method):  # type: ignore[arg-type]
                spec = PointSpec(
                    name, base.model, base.revision, peft=str(folder), dtype=EVAL_DTYPE
                )
            else:
                spec = PointSpec(name, str(folder), dtype=EVAL_DTYPE)
            points.append((method, epoch, spec))
    return points
