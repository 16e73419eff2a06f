"""calib-study: evaluate a grid of models (sizes, training steps, adapters) on the calib tasks,
one harness process per point, resumably, then report on all points together.

See ``calib_tasks.study.spec`` for the study file, ``calib_tasks.study.runner`` for how points
are run, and ``calib_tasks.study.cli`` for the command.
"""
