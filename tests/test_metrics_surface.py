"""The front door of calib_metrics: what it exports, how its functions take their knobs, and
that each public function documents itself with an example."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import calib_metrics as cm
from calib_metrics.bootstrap import index_bootstrap_ci
from calib_metrics.classwise import classwise_ece

FUNCTIONS = [name for name in cm.__all__ if inspect.isfunction(getattr(cm, name))]
CLASSES = [name for name in cm.__all__ if inspect.isclass(getattr(cm, name))]


#: The front door: what a user starts from.
FRONT_DOOR = {
    *("DEFAULT_LEVEL", "DEFAULT_N_BINS", "DEFAULT_N_RESAMPLES", "DEFAULT_RESOLUTION"),
    *("DEFAULT_SEED", "DEFAULT_STRATEGY"),
    *("ece", "mce", "rms_calibration_error", "debiased_l2_calibration_error", "ece_one_bin"),
    "smooth_ece",
    *("brier_top_label", "brier_multiclass", "nll", "auroc", "aurc", "accuracy_at_coverage"),
    *("ReliabilityBins", "reliability_bins", "ConfidenceInterval", "bootstrap_ci"),
    *("ConfidenceHistogram", "histogram_metrics", "as_multiclass", "top_label_from_probs"),
}
#: The rest of the public names, each imported from its module.
SUBMODULES = {
    "calib_metrics.bootstrap": ("index_bootstrap_ci",),
    "calib_metrics.classwise": ("classwise_ece", "static_calibration_error"),
    "calib_metrics.degenerate": ("uninformative_reason", "histogram_uninformative_reason"),
    "calib_metrics.helm": ("helm_ece_equal_mass", "helm_selective_accuracy"),
    "calib_metrics.histogram": ("reliability_bins_from_histogram", "canonical_order"),
    "calib_metrics.recalibration": (
        "TemperatureScaling",
        "PlattScaling",
        "HistogramBinning",
        "IsotonicCalibration",
        "cross_fit",
    ),
}


def test_every_exported_name_is_public_and_importable():
    assert len(set(cm.__all__)) == len(cm.__all__)
    for name in cm.__all__:
        assert not name.startswith("_") and hasattr(cm, name), name
    # the old bootstrap entry points and the input helpers are gone from the front door
    for gone in ("binned_bootstrap_ci", "histogram_bootstrap_ci", "as_top_label"):
        assert gone not in cm.__all__ and not hasattr(cm, gone), gone


def test_the_front_door_holds_what_a_user_starts_from_and_the_rest_its_modules():
    assert set(cm.__all__) == FRONT_DOOR
    for module, names in SUBMODULES.items():
        for name in names:
            assert name not in cm.__all__ and not hasattr(cm, name), name
            function = getattr(importlib.import_module(module), name)
            examples = doctest.DocTestParser().get_examples(inspect.getdoc(function) or "")
            assert examples, f"{module}.{name} has no example in its docstring"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_knobs_are_keyword_only(name):
    """Data are the only positional parameters: (confidence, correct), (probs, labels), a
    histogram or a list of them, or cross_fit's (fit, inputs, targets)."""
    data = {"confidence", "correct", "probs", "labels", "hist", "histograms"}
    data |= {"fit", "inputs", "targets"}
    for parameter in inspect.signature(getattr(cm, name)).parameters.values():
        if parameter.kind is not parameter.KEYWORD_ONLY:
            assert parameter.name in data, (name, parameter.name)


@pytest.mark.parametrize("name", FUNCTIONS + CLASSES)
def test_every_public_name_has_a_doctest_example(name):
    examples = doctest.DocTestParser().get_examples(inspect.getdoc(getattr(cm, name)) or "")
    assert examples, f"{name} has no example in its docstring"


def test_defaults_are_the_default_constants():
    for function in (cm.ece, cm.mce, cm.rms_calibration_error, cm.reliability_bins, classwise_ece):
        parameters = inspect.signature(function).parameters
        assert parameters["n_bins"].default == cm.DEFAULT_N_BINS, function
        assert parameters["strategy"].default == cm.DEFAULT_STRATEGY, function
    for bootstrap in (cm.bootstrap_ci, index_bootstrap_ci):
        parameters = inspect.signature(bootstrap).parameters
        assert parameters["n_resamples"].default == cm.DEFAULT_N_RESAMPLES
        assert parameters["level"].default == cm.DEFAULT_LEVEL
        assert parameters["seed"].default == cm.DEFAULT_SEED
