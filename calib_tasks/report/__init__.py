"""calib-report: calibration reports from the harness's own output folders.

``python -m calib_tasks.report RUN_DIR [RUN_DIR ...] --out DIR`` (the ``calib-report`` command)
reads ``results_*.json`` and ``samples_*.jsonl`` written by ``lm_eval --output_path ...
--log_samples``, recomputes the numbers with ``calib_metrics`` and writes reliability diagrams,
a comparison across runs, breakdown tables (and for generative tasks a table of confidence
methods with a reliability diagram and risk-coverage curves per method), ``summary.md`` and a
self-contained ``report.html``.
As a library: ``calib_tasks.report.build.write_report``, which returns what it computed.
"""
