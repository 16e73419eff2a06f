"""Calibration metrics for top-label and multiclass predictions, in pure numpy.

Inputs are top-label arrays ``confidence`` (in [0, 1]) and ``correct`` (boolean or 0/1), or
multiclass ``probs`` (n x k, rows summing to 1) and ``labels`` (gold indices); see
``calib_metrics.validation``. Every function takes its data positionally and its knobs
(``n_bins``, ``strategy``, ...) by keyword only; every default is one of the ``DEFAULT_*``
constants.

>>> import calib_metrics as cm
>>> cm.ece([0.75, 0.75, 0.25, 0.25], [1, 0, 0, 0], n_bins=10)
0.25
"""

from calib_metrics.binning import ReliabilityBins, reliability_bins
from calib_metrics.bootstrap import ConfidenceInterval, bootstrap_ci
from calib_metrics.calibration_errors import (
    debiased_l2_calibration_error,
    ece,
    ece_one_bin,
    mce,
    rms_calibration_error,
)
from calib_metrics.classwise import classwise_ece, static_calibration_error
from calib_metrics.defaults import (
    DEFAULT_LEVEL,
    DEFAULT_N_BINS,
    DEFAULT_N_RESAMPLES,
    DEFAULT_RESOLUTION,
    DEFAULT_SEED,
    DEFAULT_STRATEGY,
)
from calib_metrics.degenerate import histogram_uninformative_reason, uninformative_reason
from calib_metrics.helm import helm_ece_equal_mass, helm_selective_accuracy
from calib_metrics.histogram import (
    ConfidenceHistogram,
    canonical_order,
    histogram_metrics,
    reliability_bins_from_histogram,
)
from calib_metrics.ranking import accuracy_at_coverage, aurc, auroc
from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)
from calib_metrics.scores import brier_multiclass, brier_top_label, nll
from calib_metrics.smooth_ece import smooth_ece
from calib_metrics.validation import as_multiclass, top_label_from_probs

__all__ = [
    # defaults
    "DEFAULT_LEVEL",
    "DEFAULT_N_BINS",
    "DEFAULT_N_RESAMPLES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_SEED",
    "DEFAULT_STRATEGY",
    # top-label calibration errors
    "ece",
    "mce",
    "rms_calibration_error",
    "debiased_l2_calibration_error",
    "ece_one_bin",
    "smooth_ece",
    "helm_ece_equal_mass",
    # reliability diagrams
    "ReliabilityBins",
    "reliability_bins",
    # scoring rules and ranking
    "brier_top_label",
    "brier_multiclass",
    "nll",
    "auroc",
    "aurc",
    "accuracy_at_coverage",
    "helm_selective_accuracy",
    # multiclass calibration errors
    "classwise_ece",
    "static_calibration_error",
    # histograms (token-level tasks)
    "ConfidenceHistogram",
    "histogram_metrics",
    "reliability_bins_from_histogram",
    "canonical_order",
    # intervals
    "ConfidenceInterval",
    "bootstrap_ci",
    # scores that carry no information
    "uninformative_reason",
    "histogram_uninformative_reason",
    # recalibration
    "TemperatureScaling",
    "PlattScaling",
    "HistogramBinning",
    "IsotonicCalibration",
    "cross_fit",
    # inputs
    "as_multiclass",
    "top_label_from_probs",
]
