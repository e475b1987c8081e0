"""mtexp-report on synthetic sweeps, claim verdicts on hand-built runs, the Hydra callback."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_results import SCENARIOS, write_sweep

from mtexp.claims import CONTRADICTED, INCONCLUSIVE, MISSING, SUPPORTED, evaluate_claims
from mtexp.report import ReportCallback, fmt, main
from mtexp.results import RunLoadWarning, load_runs

pytestmark = pytest.mark.filterwarnings("ignore::mtexp.results.RunLoadWarning")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sweeps(tmp_path: Path) -> tuple[Path, Path]:
    return (write_sweep(tmp_path / "multirun" / "freezing"),
            write_sweep(tmp_path / "multirun" / "lc", fractions=(0.05, 1.0)))


def test_report_cli_writes_everything(sweeps: tuple[Path, Path], capsys) -> None:
    freezing, _ = sweeps
    assert main(["--by", "freezing", str(freezing), "--metrics", "test.intent.accuracy,cost.train_seconds",
                 "--metrics", "test.slots.f1"]) == 0
    out = freezing / "report"
    expected = {"summary.csv", "summary.md", "claims.md", "report.html", "quality_vs_params.png",
                "quality_vs_time.png", "dev_curves.png", "cka_drift.png"}
    assert expected <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert "report written to" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["freezing"]) == list(SCENARIOS)
    assert list(summary["n"]) == [3, 3, 3, 3]
    assert [c for c in summary.columns if c.endswith(":mean")] == [
        "test.intent.accuracy:mean", "cost.train_seconds:mean", "test.slots.f1:mean"]
    assert summary.set_index("freezing").loc["backbone", "failed"] == 1
    md = (out / "summary.md").read_text()
    for scenario in SCENARIOS:
        assert f"| {scenario} | 3 | 0 |" in md or f"| {scenario} | 3 | 1 |" in md
    assert "| 0.971 ± 0.003 [0.964, 0.978] |" in md  # none: intent accuracy over the 3 seeds
    assert "| 22.7M exact |" not in md  # --metrics leaves the parameter count out of the tables
    assert md.index("## Answer") < md.index("## Claims") < md.index("## Details")
    assert "| none (full fine-tuning) | 3 | 0.971 [0.964, 0.978] | 5.02 min | 22.7M |" in md
    assert "| within half the time of full fine-tuning (≤ 2.51 min) | backbone |" in md
    assert "training memory" not in md.split("## Claims")[0]  # the runs did not record it
    assert "| 12_seed3 | failed | 3 | RuntimeError: CUDA out of memory |" in md
    assert "| 14_seed5 | completed | 5 | metrics.json: unreadable" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "<h2>Claims</h2>" in html and "src='http" not in html
    answer = html[html.index("<section id='answer'>"):html.index("<section id='claims'>")]
    assert "alt='pareto_front'" in answer and "<h3>snips</h3>" in answer
    assert html.index("<section id='claims'>") < html.index("<h2>Summary") < html.index("<h2>Claim evidence")
    assert html.count("<table>") == html.count("<div class='wide'><table>")  # every table scrolls alone
    assert "@media print" in html
    claims = (out / "claims.md").read_text()
    for claim in ("F1", "F2", "F3", "F4", "F5", "F6", "L1", "L2", "L3", "L4", "L5"):
        assert f"## {claim}:" in claims
    assert "**Rule.**" in claims and "mtexp-train -m optim=adamw,per_task_heads" in claims


def test_report_learning_curve_and_auto_grouping(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    freezing, lc = sweeps
    out = tmp_path / "out"
    assert main(["--out", str(out), str(lc), str(freezing)]) == 0
    assert (out / "learning_curve.png").is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:2]) == ["freezing", "cfg.data.train_fraction"]
    assert len(summary) == 8
    claims = (out / "claims.md").read_text()
    # the synthetic runs differ by the same amount in every seed: no interval, nothing to decide
    assert "## F4: backbone frozen, little labelled data — not measurable\n" in claims


def test_report_over_several_data_sets(tmp_path: Path) -> None:
    snips = write_sweep(tmp_path / "snips")
    atis = write_sweep(tmp_path / "atis")
    for choices in atis.glob("*/choices.yaml"):
        choices.write_text(choices.read_text().replace("data: snips", "data: atis"))
    out = tmp_path / "out"
    assert main([str(snips), str(atis), "--by", "freezing", "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "Grouped by data, freezing;" in md  # one group per data set, not pooled
    assert md.index("### atis") < md.index("### snips") < md.index("## Claims")
    table = md[md.index("### Verdicts per data set"):md.index("## Details")]
    assert "| claim | scenario | atis | snips | across data sets |" in table
    assert "| F3 | backbone frozen (freezing=backbone) | supported | supported | agree |" in table
    assert "| L1 |" in table and "| not decided |" in table
    assert "Where the data sets decide a claim, their verdicts agree." in table
    assert pd.read_csv(out / "summary.csv")["data"].tolist() == ["atis"] * 4 + ["snips"] * 4
    assert (out / "pareto_front.png").read_bytes().startswith(b"\x89PNG")


def test_report_cli_errors(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_fmt() -> None:
    assert fmt(22713216) == "22,713,216" and fmt(0.97123) == "0.9712" and fmt(45.25) == "45.2"
    assert fmt(float("nan")) == "–" and fmt(3) == "3" and fmt(1.5) == "1.500" and fmt(1.0) == "1.0000"
    assert fmt(-0.00001) == "0.0000"


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A load_runs-like frame of completed runs."""
    base = {"status": "completed", "has_metrics": True, "problems": "", "error": None}
    df = pd.DataFrame([{**base, "run_dir": f"run{i}", **r} for i, r in enumerate(rows)])
    df.attrs["group_columns"] = ["freezing", "optim"]
    return df


def scenario(freezing: str, optim: str, seeds: tuple[int, ...], **metrics: tuple[float, ...]):
    return [{"freezing": freezing, "optim": optim, "seed": s, **{k.replace("__", "."): v[i]
             for k, v in metrics.items()}} for i, s in enumerate(seeds)]


def verdicts(df: pd.DataFrame, hist: pd.DataFrame | None = None) -> dict[str, Any]:
    return {r.spec.id: r for r in evaluate_claims(df, hist)}


def test_claim_verdicts_on_built_runs() -> None:
    seeds = (0, 1, 2)
    rows = (
        scenario("none", "adamw", seeds, cost__seconds_per_epoch=(100, 104, 98),
                 cost__peak_memory_mb=(900, 905, 899), cost__params_trainable=(1e6, 1e6, 1e6),
                 test__intent__accuracy=(0.95, 0.96, 0.94), test__slots__f1=(0.90, 0.91, 0.89),
                 convergence__epochs_to_95pct=(2, 2, 2))
        + scenario("backbone", "adamw", seeds, cost__seconds_per_epoch=(40, 45, 41),
                   cost__peak_memory_mb=(400, 402, 401), cost__params_trainable=(5e3, 5e3, 5e3),
                   test__intent__accuracy=(0.90, 0.91, 0.89), test__slots__f1=(0.6, 0.6, 0.6))
        + scenario("none", "llrd", seeds, test__intent__accuracy=(0.92, 0.935, 0.905),
                   test__slots__f1=(0.87, 0.88, 0.86), convergence__epochs_to_95pct=(3, 1, 2))
        + scenario("head_a", "adamw", seeds, test__intent__accuracy=(0.1, 0.1, 0.1),
                   test__slots__f1=(0.93, 0.945, 0.92))
    )
    df = runs_frame(rows)
    df["cfg.freezing.head"] = df["freezing"].map({"head_a": "A"})
    res = verdicts(df)
    assert res["F2"].verdict == SUPPORTED  # faster, lighter, fewer parameters
    quality_cost = res["F2"].evidence.query("role == 'context'")
    assert quality_cost["effect"].round(4).tolist() == [-0.05, -0.30]
    assert res["L4"].verdict == CONTRADICTED  # llrd 0.03 lower on both tasks, every seed
    l4 = res["L4"].evidence.iloc[0]
    assert l4["n"] == 3 and l4["effect"] == pytest.approx(-0.03)
    assert l4["treatment"] == "optim=llrd"
    assert res["L2"].verdict == INCONCLUSIVE  # paired diffs +1, -1, 0
    assert res["F5"].verdict == SUPPORTED
    f5 = res["F5"].evidence
    assert f5["metric"].tolist() == ["test.slots.f1"]  # the task whose head is not frozen
    assert f5["treatment"].iloc[0] == "freezing=head_a freezing.head=A"
    for claim, named in (("F1", "freezing=none,all"), ("F4", "data.train_fraction"),
                         ("L5", "optim=adamw,per_task_heads"), ("F6", "freezing=none,gradual")):
        assert res[claim].verdict == MISSING
        assert named in res[claim].missing
    assert "found: freezing=none (6), freezing=backbone (3), freezing=head_a (3)" in res["F1"].missing
    assert res["F3"].verdict == MISSING  # the runs exist but measured no drift
    assert "drift.cka.mean not recorded" in res["F3"].notes[0]


def test_frozen_head_from_the_registry_or_the_recorded_head() -> None:
    seeds = (0, 1, 2)
    quality = {"test__intent__accuracy": (0.90, 0.91, 0.92), "test__slots__f1": (0.80, 0.81, 0.82)}
    rows = (scenario("none", "adamw", seeds, **quality) + scenario("head_b", "adamw", seeds, **quality)
            + scenario("one_head", "adamw", seeds, **quality))
    df = runs_frame(rows)  # head_b runs record no freezing.head: its own head (B) is the frozen one
    df["cfg.freezing.head"] = df["freezing"].map({"one_head": "slots"})  # a legacy run, head by name
    f5 = verdicts(df)["F5"].evidence
    assert f5[["treatment", "metric"]].values.tolist() == [
        ["freezing=head_b", "test.intent.accuracy"],
        ["freezing=one_head freezing.head=slots", "test.intent.accuracy"],
    ]


def test_claim_pairs_by_seed_and_fraction_and_needs_two_seeds() -> None:
    rows = (
        scenario("none", "adamw", (0, 1, 2, 0, 1, 2), cfg__data__train_fraction=(0.05,) * 3 + (1.0,) * 3,
                 test__intent__accuracy=(0.60, 0.62, 0.58, 0.95, 0.96, 0.94),
                 convergence__overfit_gap=(0.30, 0.32, 0.28, 0.02, 0.02, 0.02))
        + scenario("backbone", "adamw", (2, 1, 0, 0, 1, 2),  # seed order shuffled on purpose
                   cfg__data__train_fraction=(0.05,) * 3 + (1.0,) * 3,
                   test__intent__accuracy=(0.69, 0.72, 0.69, 0.90, 0.91, 0.89),
                   convergence__overfit_gap=(0.05, 0.06, 0.04, 0.01, 0.01, 0.01))
        + scenario("gradual", "adamw", (0,), cfg__data__train_fraction=(1.0,),
                   test__intent__accuracy=(0.95,))
        + [{"freezing": "backbone", "optim": "adamw", "seed": 3, "status": "failed",
            "cfg.data.train_fraction": 0.05, "test.intent.accuracy": 0.0}]
    )
    res = verdicts(runs_frame(rows))
    f4 = res["F4"].evidence.set_index("metric")
    assert res["F4"].verdict == SUPPORTED
    assert f4.loc["test.intent.accuracy", "effect"] == pytest.approx(0.10)  # paired by seed
    assert f4.loc["test.intent.accuracy", "n"] == 3  # the failed run is not used
    assert f4.loc["convergence.overfit_gap", "effect"] == pytest.approx(-0.25)
    f6 = res["F6"].evidence.set_index("metric")
    assert f6.loc["test.intent.accuracy", "verdict"] == f"{INCONCLUSIVE} (n < 2)"


def test_l3_spread_and_loss_spikes() -> None:
    rows = (scenario("none", "adamw", (0, 1, 2), test__intent__accuracy=(0.90, 0.95, 0.85))
            + scenario("none", "llrd", (0, 1, 2), test__intent__accuracy=(0.901, 0.900, 0.899)))
    df = runs_frame(rows)
    # adamw runs: logged steps whose summed loss jumps from 2 to 5 (4, 5 and 5 spikes); llrd: none
    spiky = {0: (3, 7, 11, 15), 1: (3, 6, 9, 12, 15), 2: (4, 8, 12, 16, 19)}
    steps = pd.DataFrame([
        {"run_dir": f"run{i}", "step": step, "train.intent.loss": 4.0 if step in spiky.get(i, ())
         else 1.0, "train.slots.loss": 1.0}
        for i in range(6) for step in range(20)
    ])
    res = {r.spec.id: r for r in evaluate_claims(df, steps=steps)}
    ev = res["L3"].evidence.set_index("check")
    assert ev.loc["seed std of test score (ratio)", "effect"] == pytest.approx(0.02)
    assert ev.loc["seed std of test score (ratio)", "verdict"] == SUPPORTED
    assert ev.loc["train-loss spikes (per step)", "effect"] == pytest.approx(-14 / 3)
    assert res["L3"].verdict == SUPPORTED


def test_callback_writes_report_and_never_raises(sweeps: tuple[Path, Path], caplog) -> None:
    freezing, _ = sweeps
    ReportCallback(by="freezing").on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(freezing)}}}))
    assert (freezing / "report" / "report.html").is_file()
    with caplog.at_level(logging.ERROR, logger="mtexp.report"):
        ReportCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": "/nonexistent"}}}))
        ReportCallback().on_multirun_end(OmegaConf.create({}))
    assert caplog.text.count("mtexp report for the sweep failed") == 2


APP = """
    import json, pathlib, hydra, yaml
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path=None, config_name="cfg")
    def app(cfg):
        out = pathlib.Path(HydraConfig.get().runtime.output_dir)
        (out / "choices.yaml").write_text(yaml.safe_dump({"freezing": cfg.freezing}))
        (out / "status.json").write_text(json.dumps({"status": "completed"}))
        score = 0.9 + 0.01 * cfg.seed - (0.1 if cfg.freezing == "backbone" else 0)
        (out / "metrics.json").write_text(json.dumps(
            {"status": "completed", "seed": cfg.seed, "test": {"intent": {"accuracy": score}}}))

    if __name__ == "__main__":
        from hydra.core.config_store import ConfigStore
        ConfigStore.instance().store(name="cfg", node={
            "seed": 0, "freezing": "none",
            "hydra": {"callbacks": {"report": {"_target_": "mtexp.report.ReportCallback"}},
                      "sweep": {"dir": "sweep", "subdir": "${hydra.job.num}_seed${seed}"}}})
        app()
"""


def test_callback_runs_at_the_end_of_a_real_multirun(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    done = subprocess.run([sys.executable, "app.py", "-m", "freezing=none,backbone", "seed=0,1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "sweep" / "report" / "summary.csv")
    assert summary[["freezing", "n"]].values.tolist() == [["none", 2], ["backbone", 2]]


def test_load_runs_warns_once_per_bad_run(sweeps: tuple[Path, Path]) -> None:
    with pytest.warns(RunLoadWarning) as record:
        load_runs(sweeps[0])
    assert len([w for w in record if issubclass(w.category, RunLoadWarning)]) == 1
