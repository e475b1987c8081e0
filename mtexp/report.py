"""`mtexp-report SWEEP_DIR... [--out DIR] [--by freezing]`: tables, plots, claims and one HTML page.

Also `ReportCallback`, a Hydra callback that runs the same report at the end of a multirun.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtexp.claims import ClaimResult, claims_overview, evaluate_claims
from mtexp.formatting import decimals, fmt
from mtexp.io import atomic_write_bytes, atomic_write_text
from mtexp.plots import PLOTS, group_label, make_plots, png_bytes
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
from mtexp.verdicts import RULE_POINTS, rules_table

log = logging.getLogger(__name__)
Table = tuple[list[str], list[list[str]]]


def _cell(row: pd.Series, metric: str, n: int) -> str:
    get = lambda s: row.get(f"{metric}{STAT_SEP}{s}")  # noqa: E731
    if pd.isna(get("mean")):
        return "–"
    d = decimals(get("mean"))
    text = f"{fmt(get('mean'), d)} ± {fmt(get('std'), d)} [{fmt(get('ci_low'), d)}, {fmt(get('ci_high'), d)}]"
    return text if get("n") == n else f"{text} (n={int(get('n'))})"


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


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _minimum(e: pd.Series) -> str:
    if e["effect_kind"] == "std ratio":
        return f"x{e['minimum']:g}"
    if pd.isna(e["minimum"]):
        return "–"
    return f"margin {fmt(e['minimum'])}" if e["direction"] == "not_lower" else f"±{fmt(e['minimum'])}"


def evidence_table(res: ClaimResult) -> Table:
    header = ["check", "scenario", "reference", "kind", "n", "reference value", "scenario value",
              "effect [95% CI]", "minimum effect", "relative", "unconverged", "verdict", "note"]
    rows = []
    for _, e in res.evidence.iterrows():
        effect = f"{fmt(e['effect'])} [{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"
        rel = "–" if pd.isna(e["relative"]) else f"{100 * e['relative']:+.1f}%"
        rows.append([f"{e['check']} ({e['metric']})", e["treatment"], e["reference"], e["effect_kind"],
                     str(e["n"]), fmt(e["reference_mean"]), fmt(e["treatment_mean"]), effect,
                     _minimum(e), rel, e["unconverged"], e["verdict"], e["note"] or "–"])
    return header, rows


def _claim_lines(res: ClaimResult) -> list[tuple[str, str]]:
    spec = res.spec
    lines = [("Claim", spec.text)]
    lines += [("Verdict by part", "; ".join(map(str, res.parts)))] if res.parts else []
    lines += [("Note", spec.note)] if spec.note else []
    lines += [("Runs that would decide it", res.missing)] if res.missing else []
    lines += [("Not recorded", "; ".join(dict.fromkeys(res.notes)))] if res.notes else []
    lines += [("Literature", spec.literature)] if spec.literature else []
    return lines


@dataclass(frozen=True)
class Markup:
    """How the claims render in one format: tables, claim headings, labelled paragraphs and
    bullet lists (texts use Markdown bold and code), and what follows each block."""

    table: Callable[[Sequence[str], Sequence[Sequence[str]]], str]
    heading: Callable[[ClaimResult], str]
    paragraph: Callable[[str, str], str]
    bullets: Callable[[Sequence[str]], str]
    gap: tuple[str, ...]


def inline_html(text: str) -> str:
    """Escaped HTML with Markdown's **bold** and `code`."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html_heading(res: ClaimResult) -> str:
    verdict = res.verdict.split(" ")[0]
    return (f"<h3>{res.spec.id}: {html.escape(res.spec.scenario)} — "
            f"<span class='{verdict}'>{html.escape(res.verdict)}</span></h3>")


MARKDOWN = Markup(md_table, lambda res: f"## {res.spec.id}: {res.spec.scenario} — {res.verdict}",
                  lambda label, text: f"**{label}.** {text}\n",
                  lambda items: "\n".join(f"- {item}" for item in items) + "\n", ("",))
HTML = Markup(html_table, _html_heading,
              lambda label, text: f"<p><b>{label}.</b> {inline_html(text)}</p>",
              lambda items: "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>",
              ())


def render_claims(results: list[ClaimResult], markup: Markup) -> str:
    """The rule with its minimum effects, the overview table, and per claim its verdict, parts,
    texts and evidence."""
    overview = claims_overview(results)
    parts = [markup.paragraph("Rule", "How each verdict below is reached:"),
             markup.bullets(RULE_POINTS),
             markup.paragraph("Minimum effects and chance levels", "One row per family of metric "
                              "columns; the first matching row applies."),
             markup.table(*rules_table()), *markup.gap,
             markup.table(list(overview.columns), overview.astype(str).to_numpy().tolist()), *markup.gap]
    for res in results:
        parts += [markup.heading(res), *markup.gap]
        parts += [markup.paragraph(label, text) for label, text in _claim_lines(res)]
        if len(res.evidence):
            parts += [markup.table(*evidence_table(res)), *markup.gap]
    return "\n".join(parts)


def claims_markdown(results: list[ClaimResult]) -> str:
    return "\n".join(["# Claims: measured evidence and verdicts", "", render_claims(results, MARKDOWN)])


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


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}img{max-width:100%}.supported{color:#176d1b}.contradicted{color:#b3261e}
.inconclusive{color:#8a6d00}.mixed{color:#a14d00}.not{color:#555}figcaption{font-size:13px;color:#444}"""


def render_html(meta: list[str], tables: dict[str, Table], issues: Table,
                pngs: dict[str, bytes], results: list[ClaimResult]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mtexp report</title>"
             f"<style>{CSS}</style></head><body><h1>mtexp report</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in meta]
    parts.append("<h2>Summary (mean ± std [95% CI] over seeds)</h2>")
    for title, table in tables.items():
        parts += [f"<h3>{html.escape(title)}</h3>", html_table(*table)]
    if issues[1]:
        parts += ["<h3>Runs not aggregated or with problems</h3>", html_table(*issues)]
    parts.append("<h2>Plots</h2>")
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(PLOTS[name].caption)}</figcaption></figure>")
    parts += ["<h2>Claims</h2>", render_claims(results, HTML), "</body></html>"]
    return "\n".join(parts)


def choose_by(df: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    """`by` as given, else the group/config columns that vary between runs, else the freezing
    scenario."""
    if by:
        return list(by)
    varying = varying_columns(df)
    if varying:
        return varying
    return [GROUP] if GROUP in df.columns else group_columns_of(df)[:1]


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

    def summary_markdown(self) -> str:
        legend = ("Cells: mean ± std [95% t-interval over seeds]; n = completed runs; unconverged "
                  "= completed runs whose metrics.json records `converged: false` ('unknown': runs "
                  "that predate the record).")
        md = ["# Summary", "", *self.meta, "", legend, ""]
        for title, table in self.tables.items():
            md += [f"## {title}", "", md_table(*table), ""]
        if self.issues[1]:
            md += ["## Runs not aggregated or with problems", "", md_table(*self.issues), ""]
        return "\n".join(md)


def prepare_report(paths: Sequence[str | os.PathLike[str]], by: Sequence[str] | None = None,
                   metrics: Sequence[str] | None = None) -> Report:
    """Load the runs under `paths`, summarise them and evaluate the claims."""
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
                  evaluate_claims(df, hist, steps=steps), meta, run_issues(df, paths[0]))


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
    html_page = render_html(report.meta, report.tables, report.issues, pngs, report.results)
    atomic_write_text(written["report.html"], html_page)
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
