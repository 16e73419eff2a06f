"""Calibration metrics for top-label and multiclass predictions, in pure numpy.

Inputs are top-label arrays ``confidence`` (in [0, 1]) and ``correct`` (boolean or 0/1), or
multiclass ``probs`` (n x k, rows summing to 1) and ``labels`` (gold indices); see
``calib_metrics.validation``. Every function takes its data positionally and its knobs
(``n_bins``, ``strategy``, ...) by keyword only; every default is one of the ``DEFAULT_*``
constants.

The front door holds what a user starts from: the metrics of top-label and multiclass
predictions, reliability bins, bootstrap intervals and confidence histograms. The rest is
imported from its module: ``calib_metrics.classwise`` (class-wise ECE, static calibration
error), ``calib_metrics.helm`` (HELM's metrics), ``calib_metrics.recalibration`` (temperature,
Platt, isotonic, histogram binning, cross-fitting), ``calib_metrics.histogram`` (more on
histograms: ``reliability_bins_from_histogram``, ``canonical_order``),
``calib_metrics.degenerate`` (scores that carry no information) and ``calib_metrics.bootstrap``
(``index_bootstrap_ci``: the bootstrap of any statistic of item indices).

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
from calib_metrics.defaults import (
    DEFAULT_LEVEL,
    DEFAULT_N_BINS,
    DEFAULT_N_RESAMPLES,
    DEFAULT_RESOLUTION,
    DEFAULT_SEED,
    DEFAULT_STRATEGY,
)
from calib_metrics.histogram import ConfidenceHistogram, histogram_metrics
from calib_metrics.ranking import accuracy_at_coverage, aurc, auroc
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
    # intervals
    "ConfidenceInterval",
    "bootstrap_ci",
    # histograms (token-level predictions)
    "ConfidenceHistogram",
    "histogram_metrics",
    # inputs
    "as_multiclass",
    "top_label_from_probs",
]
