"""The defaults shared by every function of ``calib_metrics`` (and by the tasks that use it)."""

from __future__ import annotations

#: Bins of the binned calibration errors: the convention of Guo et al. (2017, "On Calibration of
#: Modern Neural Networks") and of the study reproduced here (Zhu et al., 2023). With ~1,000
#: predictions per task (MMLU subjects pooled, facts), 10 bins keep enough samples per occupied
#: bin for its accuracy to be meaningful.
DEFAULT_N_BINS = 10

#: Equal-width bins [i/B, (i+1)/B), the last one closed at 1.
DEFAULT_STRATEGY = "equal_width"

#: Cells of a ``ConfidenceHistogram`` over [0, 1]; a multiple of every usual bin count (5, 10,
#: 20, 25, 50), so that binned metrics are exact from a histogram.
DEFAULT_RESOLUTION = 1000

#: Bootstrap resamples of a confidence interval.
DEFAULT_N_RESAMPLES = 1000

#: Coverage of a bootstrap confidence interval.
DEFAULT_LEVEL = 0.95

#: Seed of the bootstrap's ``numpy.random.Generator(PCG64(seed))``.
DEFAULT_SEED = 0
