"""How the report's parts render as Markdown and as HTML: tables, the claims with their rule and
evidence, the answer (front and recommendations per data set), and the verdicts per data set.

`MARKDOWN` and `HTML` are the two `Markup`s; `render_claims`, `render_answer` and
`render_verdicts` take one of them. The page's style sheet is `CSS`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from mtexp.answer import DataSetAnswer, Table
from mtexp.claims import ClaimResult, claims_overview
from mtexp.formatting import fmt
from mtexp.verdicts import RULE_POINTS, rules_table


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    # A wide table scrolls inside its own box instead of widening the page.
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


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


def overview_table(results: list[ClaimResult], markup: Markup) -> str:
    """One row per claim: id, scenario, verdict and its parts' verdicts with their evidence."""
    overview = claims_overview(results)
    return markup.table(list(overview.columns), overview.astype(str).to_numpy().tolist())


def render_claims(results: list[ClaimResult], markup: Markup, overview: bool = True) -> str:
    """The rule with its minimum effects, the overview table (unless `overview` is false), and
    per claim its verdict, parts, texts and evidence."""
    parts = [markup.paragraph("Rule", "How each verdict below is reached:"),
             markup.bullets(RULE_POINTS),
             markup.paragraph("Minimum effects and chance levels", "One row per family of metric "
                              "columns; the first matching row applies."),
             markup.table(*rules_table()), *markup.gap]
    if overview:
        parts += [overview_table(results, markup), *markup.gap]
    for res in results:
        parts += [markup.heading(res), *markup.gap]
        parts += [markup.paragraph(label, text) for label, text in _claim_lines(res)]
        if len(res.evidence):
            parts += [markup.table(*evidence_table(res)), *markup.gap]
    return "\n".join(parts)


def claims_markdown(results: list[ClaimResult]) -> str:
    return "\n".join(["# Claims: measured evidence and verdicts", "", render_claims(results, MARKDOWN)])


ANSWER_INTRO = (
    "Each configuration (freezing scenario, optimizer preset, ...) is weighed by its test score "
    "(`{score}`, mean and 95% interval over seeds) and its training cost (mean over seeds). A "
    "configuration is on the **Pareto front** when no other one scores at least as well at no "
    "more time, memory and trainable parameters, and better or cheaper on one of them. The "
    "recommendations read the best configuration per budget off that front; 'also within its "
    "interval' names the other configurations within the budget, on the front or not, whose "
    "mean score lies inside the recommended one's interval (as good, within the seeds' noise).")


def render_answer(answers: list[DataSetAnswer], markup: Markup, heading: Callable[[str], str],
                  score: str) -> str:
    """Per data set: its heading, the front and the recommendations."""
    parts = [markup.paragraph("How to read it", ANSWER_INTRO.format(score=score))]
    for answer in answers:
        parts += [heading(answer.data_set)]
        parts += [markup.paragraph("Pareto front", "Configurations no other one beats on score "
                                   "and every cost at once, best score first."),
                  markup.table(*answer.front), *markup.gap]
        parts += [markup.paragraph("Recommendations", "The best configuration within each budget."),
                  markup.table(*answer.recommendations), *markup.gap]
    return "\n".join(parts)


def render_verdicts(table: Table, disagree: list[str], markup: Markup) -> str:
    """Each claim's verdict per data set, and where the decided verdicts disagree."""
    text = ("The data sets disagree on: " + " | ".join(disagree) + ".") if disagree else \
        "Where the data sets decide a claim, their verdicts agree."
    return "\n".join([markup.table(*table), *markup.gap,
                      markup.paragraph("Across data sets", text)])


CSS = """*,*::before,*::after{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 2em;max-width:1400px;line-height:1.4}
p,li,figcaption,h1,h2,h3{overflow-wrap:anywhere}
.wide{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td{font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto}figure{margin:1em 0}
.supported{color:#176d1b}.contradicted{color:#b3261e}.inconclusive{color:#8a6d00}.mixed{color:#a14d00}
.not{color:#555}figcaption{font-size:13px;color:#444}
#answer{border-left:4px solid #176d1b;padding-left:1em}
@page{margin:1.5cm}
@media print{body{margin:0;padding:0;max-width:none;font-size:10pt}
.wide{overflow:visible}table{width:100%;font-size:7.5pt}td,th{overflow-wrap:anywhere;padding:2px 3px}
thead{display:table-header-group}tr,figure,img{break-inside:avoid}h2,h3{break-after:avoid}
#answer{border-left:none;padding-left:0}}"""
