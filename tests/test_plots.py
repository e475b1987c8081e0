"""Report figures drawn from hand-built run and history frames."""

from __future__ import annotations

import pandas as pd

from mtexp.plots import trainable_per_epoch


def _history(counts: dict[str, list[int]]) -> pd.DataFrame:
    rows = [{"run_dir": f"{freezing}/seed{seed}", "freezing": freezing, "status": "completed",
             "epoch": epoch, "params_trainable": count}
            for freezing, per_epoch in counts.items() for seed in (0, 1)
            for epoch, count in enumerate(per_epoch, start=1)]
    return pd.DataFrame(rows)


def test_trainable_parameters_per_epoch_are_drawn_when_a_scenario_changes_them() -> None:
    hist = _history({"none": [22_600_000] * 3, "gradual": [34_650, 3_583_578, 22_600_000]})
    fig = trainable_per_epoch(pd.DataFrame(), hist, ["freezing"])
    assert fig is not None
    (ax,) = fig.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["gradual"] == [34_650, 3_583_578, 22_600_000]
    assert lines["none"] == [22_600_000] * 3
    assert ax.get_yscale() == "symlog"


def test_no_trainable_parameters_figure_when_every_count_is_constant() -> None:
    hist = _history({"none": [22_600_000] * 3, "backbone": [5_390] * 3})
    assert trainable_per_epoch(pd.DataFrame(), hist, ["freezing"]) is None
    assert trainable_per_epoch(pd.DataFrame(), hist.drop(columns="params_trainable"), ["freezing"]) is None
