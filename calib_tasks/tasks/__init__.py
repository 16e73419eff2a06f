"""The calibration tasks: ``base`` (``CalibTask``, ``TokenStatsTask``), the multiple-choice
wrapper of any harness task (``multiple_choice``; ``mmlu`` is one), facts (``facts`` with
``lama``'s loader) and causal language modelling (``clm``)."""
