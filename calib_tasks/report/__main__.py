"""``python -m calib_tasks.report``: see ``calib_tasks.report.cli``."""

from calib_tasks.report.cli import main

raise SystemExit(main())
