"""``python -m calib_tasks.tune``: see ``calib_tasks.tune.cli``."""

from calib_tasks.tune.cli import main

raise SystemExit(main())
