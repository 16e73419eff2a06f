"""calib_metrics against independent implementations, on random inputs.

torchmetrics: ``binary_calibration_error(preds, target, n_bins, norm)`` treats ``preds`` as the
probability of the positive class and ``target`` as the outcome, with bins from
``linspace(0, 1, n_bins + 1)`` and ``bucketize(right=True)``, i.e. [e_i, e_{i+1}). Passing the
top-label confidence as ``preds`` and correctness as ``target`` therefore gives the top-label
calibration error with our equal-width bins: norm "l1" is ``ece``, "max" is ``mce`` and "l2" is
``rms_calibration_error``. The two differ only for a confidence exactly on an inner edge (its
linspace edges can be one ulp off i/B) or equal to 1 (torchmetrics gives it a bin of its own),
which random continuous confidences never hit.

relplot (Blasiok & Nakkiran's reference code): ``relplot.smECE(f, y)``. It truncates the kernel
at +-0.5, evaluates the smoothed residual on a 200-point mesh (for bandwidths >= 0.05) and
stops its bisection on the bandwidth at a bracket of 2**-10, so it agrees with our fine-grid
computation of the same definition to about 5e-4 on data whose smooth ECE stays below 0.2
(the largest difference seen over many such draws); the test allows 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import relplot
import torch
from torchmetrics.functional.classification import binary_calibration_error

import calib_metrics as cm

NORMS = {"l1": cm.ece, "max": cm.mce, "l2": cm.rms_calibration_error}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_bins", [1, 5, 10, 15, 37])
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_binned_errors_equal_torchmetrics(seed, n_bins, norm):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    confidence = rng.beta(2.0, 0.8, size=n)
    correct = rng.random(n) < confidence ** rng.uniform(0.5, 2.0)
    theirs = binary_calibration_error(
        torch.from_numpy(confidence), torch.from_numpy(correct.astype(np.int64)), n_bins, norm
    )
    assert NORMS[norm](confidence, correct, n_bins=n_bins) == pytest.approx(
        float(theirs), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(8))
def test_smooth_ece_matches_relplot(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(200, 3000))
    confidence = rng.beta(rng.uniform(1.0, 5.0), rng.uniform(0.5, 2.0), size=n)
    correct = (rng.random(n) < confidence ** rng.uniform(0.5, 2.0)).astype(float)
    ours = cm.smooth_ece(confidence, correct)
    assert 0.005 < ours < 0.2  # the regime the tolerance is stated for
    assert ours == pytest.approx(relplot.smECE(confidence, correct), abs=1e-3)
