"""The reliability diagram shows how full each bin is, and tells accuracy from confidence in
both directions of the gap (overconfident and underconfident bins)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba

import calib_metrics as cm
from calib_tasks.report.figures import write_reliability_diagram

# bin [0.1, 0.2): one prediction, right (near-empty, underconfident by 0.85);
# bin [0.3, 0.4): 200 predictions at ~0.35, 70% right (underconfident);
# bin [0.6, 0.7): 300 predictions at ~0.65, 50% right (overconfident)
CONFIDENCE = np.concatenate([[0.15], np.full(200, 0.35), np.full(300, 0.65)])
CORRECT = np.concatenate([[1], np.arange(200) < 140, np.arange(300) < 150]).astype(float)


@pytest.fixture(scope="module")
def diagram(tmp_path_factory: pytest.TempPathFactory):
    """The diagram drawn (its top and bottom axes) and the stem of its files."""
    stem = tmp_path_factory.mktemp("diagram") / "reliability"
    figure = write_reliability_diagram(
        stem,
        cm.reliability_bins(CONFIDENCE, CORRECT),
        title="calib_facts_mini: tiny",
        stats="n = 501",
        binning="10 equal-width bins",
    )
    top, bottom = figure.axes
    return top, bottom, stem


def _bars(axis, label_start: str):
    (container,) = [c for c in axis.containers if c.get_label().startswith(label_start)]
    return list(container)


def test_accuracy_is_a_bar_and_confidence_a_line_in_every_filled_bin(diagram) -> None:
    top, _, _ = diagram
    accuracy = _bars(top, "accuracy")
    assert [bar.get_x() for bar in accuracy] == pytest.approx([0.1, 0.3, 0.6])
    assert [bar.get_height() for bar in accuracy] == pytest.approx([1.0, 0.7, 0.5])
    (confidence,) = [c for c in top.collections if c.get_label() == "mean confidence in bin"]
    levels = [segment[0][1] for segment in confidence.get_segments()]
    assert levels == pytest.approx([0.15, 0.35, 0.65])


def test_the_gap_is_a_region_of_its_own_in_either_direction(diagram) -> None:
    top, _, _ = diagram
    (over,) = _bars(top, "gap, overconfident")
    assert (over.get_x(), over.get_y(), over.get_y() + over.get_height()) == pytest.approx(
        (0.6, 0.5, 0.65)
    )
    under = _bars(top, "gap, underconfident")
    spans = [(bar.get_x(), bar.get_y(), bar.get_y() + bar.get_height()) for bar in under]
    assert np.allclose(spans, [(0.1, 0.15, 1.0), (0.3, 0.35, 0.7)])
    # told apart from each other and from the accuracy bar by hatch and color
    accuracy = _bars(top, "accuracy")[0]
    assert over.get_hatch() != under[0].get_hatch()
    assert over.get_edgecolor()[:3] != under[0].get_edgecolor()[:3]
    assert accuracy.get_hatch() is None and under[0].get_facecolor()[3] == 0
    legend = [text.get_text() for text in top.figure.legends[0].get_texts()]
    for label in ("accuracy", "mean confidence", "gap, overconfident", "gap, underconfident"):
        assert any(text.startswith(label) for text in legend), legend


def test_a_near_empty_bin_is_faint_and_every_bin_shows_its_count(diagram) -> None:
    top, bottom, _ = diagram
    alpha = [bar.get_facecolor()[3] for bar in _bars(top, "accuracy")]
    assert alpha[0] < 0.2 < alpha[1] < alpha[2] == pytest.approx(1.0)
    (confidence,) = [c for c in top.collections if c.get_label() == "mean confidence in bin"]
    assert [rgba[3] for rgba in confidence.get_colors()] == pytest.approx(alpha)
    gaps = _bars(top, "gap, underconfident")
    assert gaps[0].get_edgecolor()[3] == pytest.approx(alpha[0])
    assert gaps[0].get_edgecolor()[:3] == pytest.approx(to_rgba("#55A868")[:3])
    counts = {text.get_text(): text.xy[0] for text in bottom.texts}
    assert counts == pytest.approx({"1": 0.15, "200": 0.35, "300": 0.65})


def test_the_diagram_is_written_as_png_and_svg(diagram) -> None:
    _, _, stem = diagram
    for suffix in (".png", ".svg"):
        assert Path(f"{stem}{suffix}").stat().st_size > 10_000
