"""Calibration metrics for top-label and multiclass predictions, in pure numpy.

Inputs are top-label arrays ``confidence`` (in [0, 1]) and ``correct`` (boolean or 0/1), or
multiclass ``probs`` (n x k, rows summing to 1) and ``labels`` (gold indices); see
``calib_metrics.validation``. Every default is one of the ``DEFAULT_*`` constants.
"""

from calib_metrics.binning import ReliabilityBins, reliability_bins
from calib_metrics.bootstrap import (
    ConfidenceInterval,
    binned_bootstrap_ci,
    bootstrap_ci,
    histogram_bootstrap_ci,
)
from calib_metrics.calibration_errors import (
    debiased_l2_calibration_error,
    ece,
    ece_one_bin,
    mce,
    rms_calibration_error,
)
from calib_metrics.defaults import (
    DEFAULT_LEVEL,
    DEFAULT_N_BINS,
    DEFAULT_N_RESAMPLES,
    DEFAULT_RESOLUTION,
    DEFAULT_SEED,
    DEFAULT_STRATEGY,
)
from calib_metrics.degenerate import histogram_uninformative_reason, uninformative_reason
from calib_metrics.histogram import (
    ConfidenceHistogram,
    canonical_order,
    histogram_metrics,
    reliability_bins_from_histogram,
)
from calib_metrics.ranking import accuracy_at_coverage, aurc, auroc
from calib_metrics.scores import brier_multiclass, brier_top_label, nll
from calib_metrics.smooth_ece import smooth_ece
from calib_metrics.validation import as_multiclass, as_top_label, top_label_from_probs

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_N_BINS",
    "DEFAULT_N_RESAMPLES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_SEED",
    "DEFAULT_STRATEGY",
    "ConfidenceHistogram",
    "ConfidenceInterval",
    "ReliabilityBins",
    "accuracy_at_coverage",
    "as_multiclass",
    "as_top_label",
    "aurc",
    "auroc",
    "binned_bootstrap_ci",
    "bootstrap_ci",
    "brier_multiclass",
    "brier_top_label",
    "canonical_order",
    "debiased_l2_calibration_error",
    "ece",
    "ece_one_bin",
    "histogram_bootstrap_ci",
    "histogram_metrics",
    "histogram_uninformative_reason",
    "mce",
    "nll",
    "reliability_bins",
    "reliability_bins_from_histogram",
    "rms_calibration_error",
    "smooth_ece",
    "top_label_from_probs",
    "uninformative_reason",
]
