"""plot_plan(): a PNG of the planned against the executed trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_rl.evaluation import plot_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _trajectories():
    t = np.linspace(0.0, 1.0, 16)
    planned = np.stack([t, t**2, np.sin(3 * t), np.cos(3 * t)], axis=1)
    executed = planned[:12] + 0.05
    return planned, executed


def test_plot_is_a_png_and_xy_adds_a_panel(tmp_path):
    planned, executed = _trajectories()
    a = plot_plan(planned, executed, tmp_path / "all.png", title="all dims")
    b = plot_plan(planned, executed, tmp_path / "sub" / "xy.png", dims=(0, 1), xy=True)
    for p in (a, b):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    import matplotlib.image as mpimg

    wide = mpimg.imread(a)
    xy = mpimg.imread(b)
    # 4 dims -> a 2x3 grid (taller), 2 dims + x-y -> one row of three
    assert wide.shape[0] > xy.shape[0] and wide.shape[1] == xy.shape[1]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["xy.png"]


@pytest.mark.parametrize(
    "planned, executed, kwargs, match",
    [
        (np.zeros((5,)), np.zeros((5, 2)), {}, r"planned: expected .*\[steps, state_dim\]"),
        (np.zeros((5, 3)), np.zeros((5, 2)), {}, "share the state dimension"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"dims": (0, 2)}, r"\[0, 2\)"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"dims": (0, 1, 2), "xy": True}, "exactly 2 dims"),
    ],
)
def test_bad_input(tmp_path, planned, executed, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_plan(planned, executed, tmp_path / "x.png", **kwargs)
    assert not list(tmp_path.iterdir())


def test_the_xy_panel_names_its_curves_with_the_labels_given(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), real(self, *a, **k))[1])
    rng = np.random.default_rng(0)
    plot_plan(rng.normal(size=(6, 2)), rng.normal(size=(6, 2)), tmp_path / "a.png", xy=True,
              labels=("planned actions", "executed actions"), dim_names=["action[0]", "action[1]"])
    axes = [ax for ax in saved[0].axes if ax.get_visible()]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in (axes[0], axes[-1])]
    assert legends[0] == ["planned actions", "executed actions"]
    assert legends[1][:2] == ["planned actions", "executed actions"]  # the x-y panel said "planned"/"executed"
    assert axes[-1].get_xlabel() == "action[0]" and axes[-1].get_ylabel() == "action[1]"
