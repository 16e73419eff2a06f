"""The public reliability diagram draws into the caller's Axes and returns numbers that a
brute-force recomputation (plain loops, no calib_metrics) agrees with; the report draws its
reliability panel with it."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import calib_metrics as cm
import calib_tasks.render.reliability as reliability
import calib_tasks.report.figures as report_figures
from calib_tasks.render.reliability import (
    ReliabilityData,
    draw_reliability,
    reliability_diagram,
)

RNG = np.random.default_rng(7)
CONFIDENCE = RNG.uniform(0.2, 1.0, 401)
# over- and underconfident in turn along the confidence axis
CORRECT = (RNG.uniform(size=401) < CONFIDENCE + 0.3 * np.sin(12 * CONFIDENCE)).astype(float)


def _brute_force(confidence, correct, n_bins: int, strategy: str):
    """Edges, count, accuracy, mean confidence, gap and ECE, one prediction at a time."""
    if strategy == "equal_width":
        edges = [i / n_bins for i in range(n_bins + 1)]
    else:
        edges = [0.0] + [float(np.quantile(confidence, i / n_bins)) for i in range(1, n_bins)]
        edges += [1.0]
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for k, c in enumerate(confidence):
        for i in range(n_bins):
            last = i == n_bins - 1
            if edges[i] <= c and (c < edges[i + 1] or (last and c <= edges[i + 1])):
                members[i].append(k)
                break
    count, accuracy, mean_confidence, gap = [], [], [], []
    ece = 0.0
    for items in members:
        count.append(len(items))
        if not items:
            accuracy.append(np.nan), mean_confidence.append(np.nan), gap.append(np.nan)
            continue
        acc = sum(correct[k] for k in items) / len(items)
        conf = sum(confidence[k] for k in items) / len(items)
        accuracy.append(acc), mean_confidence.append(conf), gap.append(conf - acc)
        ece += len(items) / len(confidence) * abs(conf - acc)
    return edges, count, accuracy, mean_confidence, gap, ece


@pytest.mark.parametrize(("n_bins", "strategy"), [(10, "equal_width"), (8, "equal_mass")])
def test_drawn_into_the_second_panel_of_a_grid_with_the_numbers_of_a_brute_force(
    n_bins: int, strategy: str
) -> None:
    figure = Figure(figsize=(9, 4))
    left, right = figure.subplots(1, 2)
    diagram = reliability_diagram(CONFIDENCE, CORRECT, ax=right, n_bins=n_bins, strategy=strategy)
    assert diagram.ax is right and diagram.figure is figure
    assert not left.has_data() and not left.get_legend()
    assert right.get_legend() is diagram.legend is not None

    edges, count, accuracy, mean_confidence, gap, ece = _brute_force(
        CONFIDENCE, CORRECT, n_bins, strategy
    )
    data = diagram.data
    assert data.edges == pytest.approx(edges)
    assert data.count.tolist() == count
    assert data.accuracy == pytest.approx(accuracy, nan_ok=True)
    assert data.mean_confidence == pytest.approx(mean_confidence, nan_ok=True)
    assert data.gap == pytest.approx(gap, nan_ok=True)
    assert data.ece == pytest.approx(ece)
    assert data.n == len(CONFIDENCE)

    # one accuracy bar and one confidence line per filled bin, at the data's heights
    filled = [i for i, n in enumerate(count) if n]
    assert [bar.get_height() for bar in diagram.accuracy] == pytest.approx(
        [accuracy[i] for i in filled]
    )
    levels = [segment[0][1] for segment in diagram.confidence.get_segments()]
    assert levels == pytest.approx([mean_confidence[i] for i in filled])
    # the gaps: overconfident bins from accuracy up to confidence, underconfident the other way
    over = [i for i in filled if gap[i] > 0]
    under = [i for i in filled if gap[i] < 0]
    assert over and under, "the data should be over- and underconfident"
    spans = [(b.get_y(), b.get_y() + b.get_height()) for b in diagram.overconfident]
    np.testing.assert_allclose(spans, [(accuracy[i], mean_confidence[i]) for i in over])
    spans = [(b.get_y(), b.get_y() + b.get_height()) for b in diagram.underconfident]
    np.testing.assert_allclose(spans, [(mean_confidence[i], accuracy[i]) for i in under])
    # equal-mass bins are drawn over the observed range of confidence
    drawn = [bar.get_x() for bar in diagram.accuracy]
    if strategy == "equal_mass":
        assert drawn[0] == pytest.approx(CONFIDENCE.min())
        right_end = diagram.accuracy[-1].get_x() + diagram.accuracy[-1].get_width()
        assert right_end == pytest.approx(CONFIDENCE.max())
    else:
        assert drawn == pytest.approx([edges[i] for i in filled])


def test_the_numbers_are_calib_metrics_and_the_same_from_bins() -> None:
    data = ReliabilityData.from_predictions(CONFIDENCE, CORRECT)
    assert data.ece == cm.ece(CONFIDENCE, CORRECT)
    bins = cm.reliability_bins(CONFIDENCE, CORRECT)
    from_bins = ReliabilityData.from_bins(bins)
    assert from_bins.ece == pytest.approx(data.ece, abs=1e-12)
    for name in ("edges", "count", "accuracy", "mean_confidence", "gap"):
        np.testing.assert_array_equal(getattr(from_bins, name), getattr(data, name))


def test_without_axes_a_new_figure_is_made() -> None:
    import matplotlib.pyplot as plt

    diagram = reliability_diagram([0.3, 0.9, 0.9], [0, 1, 0], legend=False)
    try:
        assert diagram.figure.axes == [diagram.ax]
        assert diagram.legend is None and diagram.ax.get_legend() is None
        assert diagram.overconfident is not None and diagram.underconfident is None
    finally:
        plt.close(diagram.figure)


def test_the_legend_names_every_mark_opaque() -> None:
    ax = Figure().subplots()
    diagram = reliability_diagram([0.15, 0.35, 0.35, 0.65, 0.65], [1, 1, 0, 0, 1], ax=ax)
    texts = [text.get_text() for text in diagram.legend.get_texts()]
    for label in ("perfect", "accuracy", "gap, overconfident", "gap, underconfident", "mean"):
        assert any(text.startswith(label) for text in texts), texts
    assert all(handle.get_alpha() == 1 for handle in diagram.legend.legend_handles)


def test_the_report_draws_its_reliability_panel_with_it(monkeypatch, tmp_path) -> None:
    drawn = []

    def spy(data, **kwargs):
        drawn.append(draw_reliability(data, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(report_figures, "draw_reliability", spy)
    figure = report_figures.write_reliability_diagram(
        tmp_path / "diagram",
        cm.reliability_bins(CONFIDENCE, CORRECT),
        title="task: run",
        stats="n = 401",
        binning="10 equal-width bins",
    )
    (diagram,) = drawn
    assert diagram.ax is figure.axes[0]
    assert diagram.data.ece == pytest.approx(cm.ece(CONFIDENCE, CORRECT))


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(reliability)
    assert result.attempted > 0 and result.failed == 0


def test_importable_without_lm_eval() -> None:
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "from calib_tasks.render.reliability import reliability_diagram\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
