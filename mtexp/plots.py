"""Report figures (matplotlib, no pyplot state): the Pareto front of score against cost, quality
vs cost, dev curves, trainable parameters per epoch, CKA per layer, learning curves.

Each builder returns a Figure, or None when the runs lack what it needs.

`PLOTS` lists the report's figures in page order; a new one is a function
`(runs, histories, by) -> Figure | None` decorated with `@register_plot(name, caption)`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mtexp import front
from mtexp.results import FRACTION, STAT_SEP, completed_mask, sort_groups, task_metrics

PANEL = (4.8, 3.6)
PlotBuilder = Callable[[pd.DataFrame, pd.DataFrame, Sequence[str]], Figure | None]


@dataclass(frozen=True)
class Plot:
    """One report figure: its caption, and the function that draws it from the runs (a
    `load_runs` frame), their histories (`load_histories`) and the group columns."""

    caption: str
    build: PlotBuilder


PLOTS: dict[str, Plot] = {}


def register_plot(name: str, caption: str) -> Callable[[PlotBuilder], PlotBuilder]:
    """Decorator: add a builder to `PLOTS` under `name` (the PNG's name), after the others."""
    def add(build: PlotBuilder) -> PlotBuilder:
        if name in PLOTS:
            raise ValueError(f"a plot named {name!r} is already registered")
        PLOTS[name] = Plot(caption, build)
        return build
    return add


def group_label(values: Sequence[object], by: Sequence[str]) -> str:
    """`backbone`, or `none / train_fraction=0.05` for config columns."""
    parts = [f"{c.rsplit('.', 1)[-1]}={v}" if c.startswith("cfg.") else str(v)
             for c, v in zip(by, values, strict=True)]
    return " / ".join(parts) or "all runs"


def _groups(df: pd.DataFrame, by: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not by:
        return [("all runs", df)]
    out = []
    keys = sort_groups(df[list(by)].drop_duplicates(), by)
    for values in keys.itertuples(index=False):
        mask = pd.Series(True, index=df.index)
        for col, v in zip(by, values, strict=True):
            mask &= df[col].isna() if pd.isna(v) else df[col].eq(v)
        out.append((group_label(values, by), df[mask]))
    return out


def _completed_history(hist: pd.DataFrame) -> pd.DataFrame:
    """The history rows of completed runs (all rows when the frame has no status)."""
    return hist[hist["status"].eq("completed")] if "status" in hist.columns else hist


def _figure(panels: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(PANEL[0] * panels, PANEL[1]), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


COST_AXES = {"cost.train_seconds": "training time (s)", "cost.train_memory_mb": "training memory (MB)",
             "cost.params_trainable": "trainable parameters"}
FRONT_CAPTION = ("Pareto front per data set: test score (mean, 95% interval over seeds) against each "
                 "training cost. Filled and named: configurations no other one beats on score and "
                 "every cost at once; hollow: beaten; dashed: the front on that cost alone.")


@register_plot("pareto_front", FRONT_CAPTION)
def pareto_front(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    """Per data set (rows) and cost (columns): every configuration's score against its cost."""
    score = front.score_column(df)
    table = front.configurations(df, by, score)
    costs = [c for c in COST_AXES if table.get(front.mean(c), pd.Series(dtype=float)).notna().any()]
    if table.empty or not costs:
        return None
    data_sets = list(dict.fromkeys(table[front.DATA_SET]))
    fig = Figure(figsize=(PANEL[0] * len(costs), PANEL[1] * len(data_sets)), layout="constrained")
    FigureCanvasAgg(fig)
    for i, data_set in enumerate(data_sets):
        sub = table[table[front.DATA_SET] == data_set]
        on_front = set(front.configuration_front(sub, score)[front.CONFIGURATION])
        for j, cost in enumerate(costs):
            ax = fig.add_subplot(len(data_sets), len(costs), i * len(costs) + j + 1)
            _front_panel(ax, sub, score, cost, on_front)
            ax.set(xlabel=COST_AXES[cost], ylabel=score, title=f"{data_set}: score vs {front.COSTS[cost]}")
    return fig


def _front_panel(ax, table: pd.DataFrame, score: str, cost: str, on_front: set[str]) -> None:
    x, y = table[front.mean(cost)].astype(float), table[front.mean(score)].astype(float)
    low = (y - table[f"{score}{STAT_SEP}ci_low"].astype(float)).fillna(0).clip(lower=0)
    high = (table[f"{score}{STAT_SEP}ci_high"].astype(float) - y).fillna(0).clip(lower=0)
    best = table[front.CONFIGURATION].isin(on_front).to_numpy()
    for mask, style in ((best, {"fmt": "o"}), (~best, {"fmt": "o", "mfc": "none", "color": "0.55"})):
        ax.errorbar(x[mask], y[mask], yerr=[low[mask], high[mask]], capsize=3, **style)
    logs = [math.log10(1 + max(float(v), 0.0)) for v in (x.min(), x.max())]
    middle = 10 ** (sum(logs) / 2) - 1  # half way across the axis (symlog, roughly)
    for (xi, yi), names in _near(x[best], y[best], table[front.CONFIGURATION][best]).items():
        text = ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
        right = xi > middle  # labels of the costly points go to their left, inside the panel
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(-4 if right else 4, -10),
                    ha="right" if right else "left", fontsize=7).set_in_layout(False)
    alone = front.configuration_front(table, score, [cost]).sort_values(front.mean(cost))
    ax.step(alone[front.mean(cost)], alone[front.mean(score)], where="post", ls="--", lw=1, color="C0")
    positive = x[x > 0]
    floor = 10.0 ** math.floor(math.log10(positive.min())) if len(positive) else 1.0
    ax.set_xscale("symlog", linthresh=floor)
    ax.grid(alpha=0.3)


def _near(x: pd.Series, y: pd.Series, names: pd.Series) -> dict[tuple[float, float], list[str]]:
    """Points' names, those of points that would print on top of each other (within 3% of the
    score range and a fifth of a decade of cost) joined under the first one."""
    span = max(float(y.max() - y.min()), 1e-9) if len(y) else 1.0
    spots: dict[tuple[float, float], list[str]] = {}
    for xi, yi, name in zip(x, y, names, strict=True):
        spot = next((s for s in spots if abs(s[1] - yi) < 0.03 * span
                     and abs(math.log10(1 + s[0]) - math.log10(1 + xi)) < 0.2), (xi, yi))
        spots.setdefault(spot, []).append(str(name))
    return spots


def quality_vs(df: pd.DataFrame, by: Sequence[str], x: str, xlabel: str) -> Figure | None:
    """Each task's headline test score (mean ± std over seeds) against a cost column."""
    runs = df[completed_mask(df)]
    metrics = task_metrics(runs)
    if not metrics or x not in runs.columns or runs[x].isna().all():
        return None
    fig, axes = _figure(len(metrics))
    for ax, (task, metric) in zip(axes, metrics.items(), strict=True):
        groups = _groups(runs, by)
        for label, sub in groups:
            xs, ys = sub[x].astype(float), sub[metric].astype(float)
            ax.errorbar(xs.mean(), ys.mean(), xerr=xs.std(), yerr=ys.std(), fmt="o", capsize=3,
                        label=label)
            if len(groups) <= 5:  # beyond that the labels overlap; the legend names them
                ax.annotate(label, (xs.mean(), ys.mean()), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xscale("symlog", linthresh=max(1.0, float(runs[x].abs().min() or 1.0)))
        ax.set(xlabel=xlabel, ylabel=metric, title=task)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    return fig


@register_plot("quality_vs_params", "Test score against trainable parameters (mean ± std over seeds).")
def quality_vs_params(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    return quality_vs(df, by, "cost.params_trainable", "trainable parameters")


@register_plot("quality_vs_time", "Test score against training time.")
def quality_vs_time(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    return quality_vs(df, by, "cost.train_seconds", "training time (s)")


@register_plot("dev_curves", "Dev score per epoch, mean over seeds.")
def dev_curves(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    """Dev headline score per epoch (mean over seeds) for each group."""
    metrics = task_metrics(df)
    if hist.empty or "epoch" not in hist.columns:
        return None
    cols = {t: c.replace("test.", "dev.", 1) for t, c in metrics.items()}
    cols = {t: c for t, c in cols.items() if c in hist.columns and hist[c].notna().any()}
    if not cols:
        return None
    done = _completed_history(hist)
    fig, axes = _figure(len(cols))
    for ax, (task, col) in zip(axes, cols.items(), strict=True):
        for label, sub in _groups(done, by):
            per_run = sub.dropna(subset=[col]).groupby(["run_dir", "epoch"])[col].last()
            curve = per_run.groupby(level="epoch").mean()
            if len(curve):
                ax.plot(curve.index, curve.to_numpy(), marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=col, title=f"{task}: dev per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    return fig


TRAINABLE = "params_trainable"


@register_plot("trainable_per_epoch", "Trainable parameters per epoch (mean over seeds), drawn when a "
               "configuration changes them during training (gradual unfreezing, a head frozen after "
               "joint training).")
def trainable_per_epoch(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    """How many parameters train in each epoch, per group; None when no group's count changes."""
    if hist.empty or TRAINABLE not in hist.columns or "epoch" not in hist.columns:
        return None
    done = _completed_history(hist)
    curves = {label: sub.dropna(subset=[TRAINABLE]).groupby("epoch")[TRAINABLE].mean()
              for label, sub in _groups(done, by)}
    curves = {label: curve for label, curve in curves.items() if len(curve)}
    if not any(curve.nunique() > 1 for curve in curves.values()):
        return None
    fig, (ax,) = _figure(1)
    for label, curve in curves.items():
        ax.plot(curve.index, curve.to_numpy(), marker="o", label=label)
    positive = [float(c[c > 0].min()) for c in curves.values() if (c > 0).any()]
    ax.set_yscale("symlog", linthresh=10.0 ** math.floor(math.log10(min(positive))) if positive else 1.0)
    ax.set(xlabel="epoch", ylabel="trainable parameters", title="trainable parameters per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # the lines fill the panel
    return fig


@register_plot("cka_drift", "Per-layer CKA between the pre-trained and the trained encoder (1 = unchanged).")
def cka_drift(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    """Linear CKA between pre-trained and trained hidden states, per layer (1 = unchanged)."""
    layers = sorted((c for c in df.columns if c.startswith("drift.cka.layer_")
                     and c.rsplit("_", 1)[1].isdigit()), key=lambda c: int(c.rsplit("_", 1)[1]))
    runs = df[completed_mask(df)]
    if not layers or runs[layers].isna().all().all():
        return None
    fig, (ax,) = _figure(1)
    index = [int(c.rsplit("_", 1)[1]) for c in layers]
    for label, sub in _groups(runs, by):
        means = sub[layers].astype(float).mean()
        if means.notna().any():
            ax.plot(index, means.to_numpy(), marker="o", label=label)
    ax.set(xlabel="layer (0 = embeddings output)", ylabel="CKA to pre-trained",
           title="per-layer drift", xticks=index)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


@register_plot("learning_curve", "Test score against the fraction of training data.")
def learning_curve(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> Figure | None:
    """Headline test score against `data.train_fraction`, when the runs vary it."""
    runs = df[completed_mask(df)]
    metrics = task_metrics(runs)
    if FRACTION not in runs.columns or runs[FRACTION].nunique() < 2 or not metrics:
        return None
    lines = [b for b in by if b != FRACTION]
    fig, axes = _figure(len(metrics))
    for ax, (task, metric) in zip(axes, metrics.items(), strict=True):
        for label, sub in _groups(runs, lines):
            stats = sub.groupby(FRACTION)[metric].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3,
                        label=label)
        ax.set_xscale("log")
        ax.set(xlabel="train fraction", ylabel=metric, title=f"{task}: learning curve")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    return fig


def make_plots(df: pd.DataFrame, hist: pd.DataFrame, by: Sequence[str]) -> dict[str, Figure]:
    """Every plot the runs allow, by name (see `PLOTS`); `by` columns missing in `hist` are
    added from `df` through `run_dir`."""
    if not hist.empty:
        extra = [b for b in by if b not in hist.columns and b in df.columns]
        if extra:
            hist = hist.merge(df[["run_dir", *extra]], on="run_dir", how="left")
    figures = {}
    for name, plot in PLOTS.items():
        fig = plot.build(df, hist, list(by))
        if fig is not None:
            figures[name] = fig
    return figures
