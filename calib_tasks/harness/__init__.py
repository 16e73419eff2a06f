"""The glue to lm-eval 0.4.13: the start-up activation, the task folder in every TaskManager,
the checks before any model call and the registered aggregations.

No imports here: ``calib_tasks.harness.activation`` runs at every interpreter start."""
