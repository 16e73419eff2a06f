"""The front door of calib_metrics: what it exports, how its functions take their knobs, and
that each public function documents itself with an example."""

from __future__ import annotations

import doctest
import inspect

import pytest

import calib_metrics as cm

FUNCTIONS = [name for name in cm.__all__ if inspect.isfunction(getattr(cm, name))]
CLASSES = [name for name in cm.__all__ if inspect.isclass(getattr(cm, name))]


def test_every_exported_name_is_public_and_importable():
    assert len(set(cm.__all__)) == len(cm.__all__)
    for name in cm.__all__:
        assert not name.startswith("_") and hasattr(cm, name), name
    # the old bootstrap entry points and the input helpers are gone from the front door
    for gone in ("binned_bootstrap_ci", "histogram_bootstrap_ci", "as_top_label"):
        assert gone not in cm.__all__ and not hasattr(cm, gone), gone


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
    for name in ("ece", "mce", "rms_calibration_error", "reliability_bins", "classwise_ece"):
        parameters = inspect.signature(getattr(cm, name)).parameters
        assert parameters["n_bins"].default == cm.DEFAULT_N_BINS, name
        assert parameters["strategy"].default == cm.DEFAULT_STRATEGY, name
    parameters = inspect.signature(cm.bootstrap_ci).parameters
    assert parameters["n_resamples"].default == cm.DEFAULT_N_RESAMPLES
    assert parameters["level"].default == cm.DEFAULT_LEVEL
    assert parameters["seed"].default == cm.DEFAULT_SEED
