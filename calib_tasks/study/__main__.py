"""``python -m calib_tasks.study``: see ``calib_tasks.study.cli``."""

from calib_tasks.study.cli import main

raise SystemExit(main())
