"""`mtexp-report SWEEP_DIR... [--out DIR] [--by freezing]`: tables, plots, claims and one HTML page.

The page and summary.md open with the answer (per data set, the Pareto front of test score against
training cost and the best configuration per budget), then the claims' verdicts (per data set
when the runs cover several), then the details: summary tables, plots, the claims' evidence.
Also `ReportCallback`, a Hydra callback that runs the same report at the end of a multirun.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtexp import front
from mtexp.answer import DataSetAnswer, Table, claims_per_data_set, front_answers, verdicts_by_data_set
from mtexp.claims import ClaimResult, evaluate_claims
from mtexp.formatting import estimate, fmt, metric_kind
from mtexp.io import atomic_write_bytes, atomic_write_text
from mtexp.plots import PLOTS, group_label, make_plots, png_bytes
from mtexp.render import (
    CSS,
    HTML,
    MARKDOWN,
    claims_markdown,
    html_table,
    md_table,
    overview_table,
    render_answer,
    render_claims,
    render_verdicts,
)
from mtexp.results import (
    STAT_SEP,
    default_metrics,
    group_columns_of,
    headline_metrics,
    load_histories,
    load_runs,
    load_steps,
    summarize,
    varying_columns,
)
from mtexp.scenarios import GROUP

__all__ = ["Report", "ReportCallback", "build_report", "choose_by", "claims_markdown", "fmt",
           "main", "parse_args", "prepare_report", "render_html", "split_option", "summary_tables"]
log = logging.getLogger(__name__)
FRONT_PLOT = "pareto_front"
ANSWER_TITLE = "Answer: test score against training cost"
LEGEND = ("Cells: mean ± std [95% t-interval over seeds], three significant digits, in the unit of "
          "the mean (parameters in k/M, times in s/min, memory in MB/GB); 'exact' where every run "
          "gives the same value; n = completed runs; unconverged = completed runs whose "
          "metrics.json records `converged: false` ('unknown': runs that predate the record).")


def _cell(row: pd.Series, metric: str, n: int) -> str:
    get = lambda s: row.get(f"{metric}{STAT_SEP}{s}")  # noqa: E731
    text = estimate(get("mean"), get("std"), get("ci_low"), get("ci_high"), metric_kind(metric))
    return text if text == "–" or get("n") == n else f"{text} (n={int(get('n'))})"


def _unconverged(row: pd.Series) -> str:
    """Completed runs that recorded `converged: false`; 'unknown' where none recorded it."""
    unknown, count = row.get("convergence_unknown", 0), row.get("unconverged", 0)
    if pd.isna(unknown) or pd.isna(count) or (unknown and unknown == row["n"]):
        return "unknown"
    return f"{int(count)}" + (f" ({int(unknown)} unknown)" if unknown else "")


def summary_tables(summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> dict[str, Table]:
    """Markdown/HTML-ready tables, one per metric family; one row per group."""
    families = {
        "Quality (test)": [m for m in metrics if m.startswith("test.")],
        "Cost": [m for m in metrics if m.startswith("cost.")],
        "Drift and convergence": [m for m in metrics if not m.startswith(("test.", "cost."))],
    }
    tables = {}
    for title, cols in families.items():
        cols = [m for m in cols if f"{m}{STAT_SEP}mean" in summary.columns]
        if not cols:
            continue
        header = ["group", "n", "failed", "running", "unconverged", *cols]
        rows = [[group_label([r[b] for b in by], by), str(r["n"]), str(r["failed"]), str(r["running"]),
                 _unconverged(r), *(_cell(r, m, r["n"]) for m in cols)] for _, r in summary.iterrows()]
        tables[title] = (header, rows)
    return tables


def _short(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root.resolve()))
    except ValueError:
        return path


def run_issues(df: pd.DataFrame, root: Path) -> Table:
    """Runs that are not aggregated or had problems: failed, unfinished, corrupt."""
    bad = df[df["status"].ne("completed") | df["problems"].fillna("").ne("")]
    rows = [[_short(r["run_dir"], root), r["status"], fmt(r["seed"]),
             "; ".join(str(x) for x in (r["error"], r["problems"]) if isinstance(x, str) and x)]
            for _, r in bad.iterrows()]
    return ["run", "status", "seed", "error / problems"], rows


def choose_by(df: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    """`by` as given, else the group/config columns that vary between runs, else the freezing
    scenario; the data set comes first whenever the runs cover several."""
    if by:
        chosen = list(by)
    else:
        chosen = varying_columns(df) or ([GROUP] if GROUP in df.columns else group_columns_of(df)[:1])
    data = front.data_set_columns(df, ())
    if data and data[0] not in chosen and df[data[0]].nunique() > 1:
        chosen.insert(0, data[0])
    return chosen


@dataclass
class Report:
    """What a report shows, before any of it is drawn or written."""

    runs: pd.DataFrame
    histories: pd.DataFrame
    by: list[str]
    summary: pd.DataFrame
    tables: dict[str, Table]
    results: list[ClaimResult]
    meta: list[str]
    issues: Table
    answers: list[DataSetAnswer] = field(default_factory=list)
    per_data_set: dict[str, list[ClaimResult]] = field(default_factory=dict)

    @property
    def score(self) -> str:
        return front.score_column(self.runs) or "test score"

    @property
    def has_front_plot(self) -> bool:
        """Whether the front has a cost to plot against (the `pareto_front` figure exists)."""
        return any(len(a.front[0]) > 3 for a in self.answers)

    def verdicts_per_data_set(self) -> tuple[Table, list[str]] | None:
        return verdicts_by_data_set(self.per_data_set) if self.per_data_set else None

    def summary_markdown(self) -> str:
        md = ["# Summary", "", *self.meta, ""]
        if self.answers:
            md += [f"## {ANSWER_TITLE}", "",
                   render_answer(self.answers, MARKDOWN, lambda name: f"### {name}\n", self.score)]
            md += ["![Pareto front](pareto_front.png)", ""] if self.has_front_plot else []
        md += ["## Claims", "", "Verdict and parts of each claim; the rule and the evidence are in "
               "claims.md.", "", overview_table(self.results, MARKDOWN), ""]
        if (by_set := self.verdicts_per_data_set()) is not None:
            md += ["### Verdicts per data set", "", render_verdicts(*by_set, MARKDOWN), ""]
        md += ["## Details", "", LEGEND, ""]
        for title, table in self.tables.items():
            md += [f"### {title}", "", md_table(*table), ""]
        if self.issues[1]:
            md += ["### Runs not aggregated or with problems", "", md_table(*self.issues), ""]
        return "\n".join(md)


def _figure(name: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(PLOTS[name].caption)}</figcaption></figure>")


def render_html(report: Report, pngs: dict[str, bytes]) -> str:
    """The self-contained page: answer, claims, then the details (tables, plots, evidence)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>mtexp report</title><style>{CSS}</style></head><body><h1>mtexp report</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in report.meta]
    if report.answers:
        parts += [f"<section id='answer'><h2>{ANSWER_TITLE}</h2>",
                  render_answer(report.answers, HTML, lambda name: f"<h3>{html.escape(name)}</h3>",
                                report.score)]
        parts += [_figure(FRONT_PLOT, pngs[FRONT_PLOT])] if FRONT_PLOT in pngs else []
        parts.append("</section>")
    parts += ["<section id='claims'><h2>Claims</h2>", overview_table(report.results, HTML)]
    if (by_set := report.verdicts_per_data_set()) is not None:
        parts += ["<h3>Verdicts per data set</h3>", render_verdicts(*by_set, HTML)]
    parts += ["</section><section id='details'><h2>Summary (mean ± std [95% CI] over seeds)</h2>",
              f"<p>{html.escape(LEGEND)}</p>"]
    for title, table in report.tables.items():
        parts += [f"<h3>{html.escape(title)}</h3>", html_table(*table)]
    if report.issues[1]:
        parts += ["<h3>Runs not aggregated or with problems</h3>", html_table(*report.issues)]
    parts.append("<h2>Plots</h2>")
    parts += [_figure(name, data) for name, data in pngs.items() if name != FRONT_PLOT]
    parts += ["<h2>Claim evidence</h2>", render_claims(report.results, HTML, overview=False),
              "</section></body></html>"]
    return "\n".join(parts)


def prepare_report(paths: Sequence[str | os.PathLike[str]], by: Sequence[str] | None = None,
                   metrics: Sequence[str] | None = None) -> Report:
    """Load the runs under `paths`, summarise them, weigh score against cost and evaluate the
    claims (per data set too, when the runs cover several)."""
    paths = [Path(p) for p in paths]
    df, hist, steps = load_runs(*paths), load_histories(*paths), load_steps(*paths)
    if df.empty:
        raise ValueError(f"no run directories under {', '.join(map(str, paths))}")
    by = choose_by(df, by)
    metrics = list(metrics) if metrics else default_metrics(df)
    summary = summarize(df, by=by, metrics=metrics)
    counts = ", ".join(f"{k}: {v}" for k, v in df["status"].value_counts().items())
    meta = [f"Runs: {len(df)} ({counts}) from {', '.join(map(str, paths))}.",
            f"Grouped by {', '.join(by)}; headline metrics: {', '.join(headline_metrics(df)) or '-'}.",
            f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by mtexp-report."]
    if (summary["n"] > summary["seeds"]).any():
        meta.append("Some groups hold several completed runs with the same seed (e.g. one "
                    "configuration in two sweeps); their intervals treat those runs as independent.")
    return Report(df, hist, by, summary, summary_tables(summary, by, metrics),
                  evaluate_claims(df, hist, steps=steps), meta, run_issues(df, paths[0]),
                  front_answers(df, by), claims_per_data_set(df, hist, steps))


def build_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] | None = None,
                 by: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> dict[str, Path]:
    """Write summary.csv/.md, claims.md, the PNG plots and report.html; return them by name."""
    out = Path(out) if out else Path(paths[0]) / "report"
    report = prepare_report(paths, by, metrics)
    figures = make_plots(report.runs, report.histories, report.by)
    pngs = {name: png_bytes(fig) for name, fig in figures.items()}
    written = {"summary.csv": out / "summary.csv", "summary.md": out / "summary.md",
               "claims.md": out / "claims.md", "report.html": out / "report.html"}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(written["summary.csv"], report.summary.to_csv(index=False))
    atomic_write_text(written["summary.md"], report.summary_markdown())
    atomic_write_text(written["claims.md"], claims_markdown(report.results))
    for name, data in pngs.items():
        written[f"{name}.png"] = out / f"{name}.png"
        atomic_write_bytes(written[f"{name}.png"], data)
    atomic_write_text(written["report.html"], render_html(report, pngs))
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    about = "Tables, plots, claim verdicts and one self-contained HTML page for mtexp runs."
    parser = argparse.ArgumentParser(prog="mtexp-report", description=about)
    parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="run or sweep folders")
    parser.add_argument("--out", help="output folder (default: <first SWEEP_DIR>/report)")
    parser.add_argument("--by", action="append", help="group columns, comma-separated or repeated, "
                        "e.g. freezing or freezing,cfg.data.train_fraction (default: the group "
                        "choices and overridden config keys that vary between runs)")
    parser.add_argument("--metrics", action="append", help="metric columns, comma-separated "
                        "(default: headline test scores, cost.*, drift, convergence.*)")
    return parser.parse_args(argv)


def split_option(items: Sequence[str] | None) -> list[str] | None:
    """`--by a,b --by c` as ["a", "b", "c"]; None when not given."""
    return [x for item in items or [] for x in item.split(",") if x] or None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = build_report(args.sweep_dirs, out=args.out, by=split_option(args.by),
                               metrics=split_option(args.metrics))
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"mtexp-report: {err}", file=sys.stderr)
        return 2
    print(f"report written to {written['report.html'].parent}")
    for name in written:
        print(f"  {name}")
    return 0


class ReportCallback(Callback):
    """Runs the report on `hydra.sweep.dir` at the end of a multirun; logs, never raises.

    Hydra calls `on_multirun_end` only when every job returned; enable with
    `hydra.callbacks.report._target_=mtexp.report.ReportCallback`.
    """

    def __init__(self, out: str | None = None, by: Sequence[str] | str | None = None) -> None:
        self.out = out
        self.by = [by] if isinstance(by, str) else list(by) if by else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            written = build_report([sweep_dir], out=self.out, by=self.by)
            log.info("mtexp report written to %s", written["report.html"].parent)
        except Exception:
            log.exception("mtexp report for the sweep failed")


if __name__ == "__main__":
    sys.exit(main())
