"""Where a study keeps its files, all under its ``output_dir``::

points/<name>/             a finished point: the harness's output folder, plus point.json
points/.<name>.partial/    a point being evaluated (renamed to points/<name> on success)
logs/<name>.log            the harness's output of the point's latest attempt
locks/<name>.lock          locked by the study run deciding about or evaluating the point
study_log.jsonl            one line per point and run of the study: what happened to it
report/                    calib-report over the finished points, and the study's figures
locks/.report.lock         locked by the study run writing the report
.report.partial/           the report being written (swapped in for report/ once whole)
slurm_jobs.json            executor kind slurm: the job last submitted for each point
slurm/                     executor kind slurm: submitit's folder (sbatch scripts, the jobs'
                           pickles, and their logs <job id>_0_log.out / .err)
locks/.submit.lock         locked by the study run deciding what to submit to SLURM
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POINT_RECORD = "point.json"


@dataclass(frozen=True)
class StudyLayout:
    """The paths of one study's output folder."""

    root: Path

    @property
    def points_dir(self) -> Path:
        """Folder of the points' output folders."""
        return self.root / "points"

    def point_dir(self, name: str) -> Path:
        """Output folder of a finished point."""
        return self.points_dir / name

    def partial_dir(self, name: str) -> Path:
        """Output folder of a point while it is evaluated."""
        return self.points_dir / f".{name}.partial"

    def lock_file(self, name: str) -> Path:
        """The point's lock file (``calib_tasks.study.lifetime.take_lock``), kept between runs."""
        return self.root / "locks" / f"{name}.lock"

    def log_file(self, name: str) -> Path:
        """The harness's output of the point's latest attempt."""
        return self.root / "logs" / f"{name}.log"

    @property
    def run_log(self) -> Path:
        """One JSON line per point and study run (``status``: done, skipped, failed, invalid)."""
        return self.root / "study_log.jsonl"

    @property
    def report_dir(self) -> Path:
        """calib-report's output and the study's figures."""
        return self.root / "report"

    @property
    def report_lock(self) -> Path:
        """The lock of the report folder, held while a report is built and swapped in (not a
        point's lock file: point names begin with a letter or digit)."""
        return self.root / "locks" / ".report.lock"

    @property
    def report_partial(self) -> Path:
        """Where a report is built before it replaces the report folder."""
        return self.root / ".report.partial"

    @property
    def report_old(self) -> Path:
        """Where the replaced report folder is put for the moment of the swap."""
        return self.root / ".report.old"

    @property
    def slurm_jobs(self) -> Path:
        """The job last submitted for each point: ``{name: {job_id, evaluation}}``."""
        return self.root / "slurm_jobs.json"

    @property
    def slurm_dir(self) -> Path:
        """submitit's folder: the sbatch scripts, the jobs' pickles and logs."""
        return self.root / "slurm"

    @property
    def submit_lock(self) -> Path:
        """Locked by the study run that decides which points to submit and records their jobs
        (not a point's lock file: point names begin with a letter or digit)."""
        return self.root / "locks" / ".submit.lock"
