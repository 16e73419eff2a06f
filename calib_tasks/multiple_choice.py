"""The public path of the multiple-choice wrapper, as task YAMLs name it (README)::

    class: !function calib_tasks.multiple_choice.CalibMultipleChoiceTask

The class lives in ``calib_tasks.tasks.multiple_choice``."""

from calib_tasks.tasks.multiple_choice import CalibMultipleChoiceTask

__all__ = ["CalibMultipleChoiceTask"]
