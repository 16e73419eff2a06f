"""The glue to lm-eval 0.4.13: the start-up activation, the task folder in every TaskManager,
the checks before any model call and the registered aggregations. What of it changes the
harness is declared, and installed, in ``calib_tasks.patches``.

No imports here: ``calib_tasks.harness.activation`` runs at every interpreter start."""
