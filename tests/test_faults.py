"""Faults a long-lived cache meets: damaged entries, writers killed mid-write, concurrent writers."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mtexp.data import Corpus, Example, MultiTaskData, TaskSpec, build_features
from mtexp.data import cache as cache_module
from mtexp.data import features as features_module

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SLOTS = TaskSpec("slots", "token", ("O", "B-artist", "B-genre", "I-artist", "I-genre"))
INTENT = TaskSpec("intent", "sequence", ("AddToPlaylist", "PlayMusic"))
SENTENCES = [
    (["play", "westbam", "unaffable", "jazz"], ["O", "B-artist", "I-artist", "B-genre"], "PlayMusic"),
    (["add", "clásicos", "to", "my", "playlist"], ["O", "B-genre", "O", "O", "O"], "AddToPlaylist"),
    (["westbam"], ["B-artist"], "PlayMusic"),
]
MAX_LENGTH = 32


def make_data() -> MultiTaskData:
    examples = [Example(list(w), {"slots": list(t), "intent": i}) for w, t, i in SENTENCES * 20]
    splits = {split: [Example(list(e.words), dict(e.labels)) for e in examples]
              for split in ("train", "dev", "test")}
    return MultiTaskData("tiny", [INTENT, SLOTS], [Corpus("tiny", ("intent", "slots"), splits)], joint=True)


def contents(features) -> dict:
    return {key: ds.to_list() for key, ds in features.datasets.items()}


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def largest_arrow_file(entry: Path) -> Path:
    return max(entry.rglob("*.arrow"), key=lambda p: p.stat().st_size)


def truncate(entry: Path) -> Path:
    target = largest_arrow_file(entry)
    with open(target, "r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    return target


def flip_bytes(entry: Path) -> Path:
    target = largest_arrow_file(entry)
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    target.write_bytes(bytes(data))
    return target


def drop_manifest(entry: Path) -> Path:
    target = entry / cache_module.MANIFEST_FILE
    target.unlink()
    return target


def drop_part(entry: Path) -> Path:
    target = largest_arrow_file(entry)
    target.unlink()
    return target


@pytest.mark.parametrize("damage", [truncate, flip_bytes, drop_manifest, drop_part],
                         ids=["truncated", "bytes changed", "no manifest", "file missing"])
def test_a_damaged_entry_is_named_in_a_warning_and_rebuilt(
    tokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], Path]
) -> None:
    cache = tmp_path / "cache"
    first = build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache)
    expected, entry = contents(first), first.cache_path
    del first  # its datasets map the files damaged below
    damaged = damage(entry)
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        again = build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache)
    assert again.stats["cache"] == "rebuilt" and again.cache_path == entry
    assert contents(again) == expected
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(entry) in warning and damaged.name in warning and "rebuilding" in warning
    assert cache_module.verify_entry(entry)
    assert build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache).stats["cache"] == "hit"
    assert leftovers(cache) == []


KILLED_WRITER = """
import os, signal, sys
import datasets
sys.path.insert(0, sys.argv[2])
from test_faults import MAX_LENGTH, make_data
from mtexp.data import build_features
from mtexp.encoder import SentenceEncoder

real_save = datasets.Dataset.save_to_disk

def save_then_die(self, path, *args, **kwargs):
    real_save(self, path, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after the first part is on disk

datasets.Dataset.save_to_disk = save_then_die
build_features(make_data(), SentenceEncoder.random_init(seed=0).tokenizer, MAX_LENGTH, cache_dir=sys.argv[1])
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=300)


def test_a_writer_killed_mid_write_leaves_no_entry_and_its_folder_goes_on_the_next_write(
    tokenizer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    killed = run_python(KILLED_WRITER, str(cache), str(TESTS_DIR))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [orphan] = leftovers(cache)
    assert orphan.startswith(".tmp-")
    assert [p.name for p in cache.iterdir()] == [orphan]  # no entry: nothing was committed
    features = build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache)
    assert features.stats["cache"] == "miss"
    assert leftovers(cache) == [] and [p.name for p in cache.iterdir()] == [features.cache_path.name]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_folders_go_when_their_writer_is_gone_or_they_are_stale(tmp_path: Path) -> None:
    host, live = cache_module._host(), os.getpid()
    names = {
        "writer gone": f".tmp-k.{host}.{dead_pid()}.aaaa.tmp",
        "writer running": f".tmp-k.{host}.{live}.bbbb.tmp",
        "writer running, stale": f".tmp-k.{host}.{live}.cccc.tmp",
        "other host": ".tmp-k.elsewhere.1.dddd.tmp",
        "other host, stale": ".tmp-k.elsewhere.1.eeee.tmp",
        "older naming, stale": ".tmp-k-0123abcd",
        "damaged entry moved aside": f".damaged-k.{host}.{dead_pid()}.ffff.tmp",
        "an entry": "tiny-0123456789abcdef01234567",
    }
    for label, name in names.items():
        (tmp_path / name / "part0").mkdir(parents=True)
        if "stale" in label:
            old = time.time() - cache_module.STALE_SECONDS - 60
            os.utime(tmp_path / name, (old, old))
    removed = {path.name for path in cache_module.remove_orphans(tmp_path)}
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {names["writer running"], names["other host"], names["an entry"]}
    assert removed == set(names.values()) - kept


def manifest_build(entry: Path) -> str:
    return json.loads((entry / cache_module.MANIFEST_FILE).read_text())["build"]


def test_the_loser_of_a_race_uses_the_winners_entry(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    real_tokenize = features_module._tokenize_all
    winner: dict = {}

    def tokenise_while_another_run_commits(*args, **kwargs):
        built = real_tokenize(*args, **kwargs)
        if not winner:
            winner["running"] = True
            winner["features"] = build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache)
            winner["build"] = manifest_build(winner["features"].cache_path)
        return built

    monkeypatch.setattr(features_module, "_tokenize_all", tokenise_while_another_run_commits)
    with caplog.at_level(logging.INFO, logger="mtexp"):
        loser = build_features(make_data(), tokenizer, MAX_LENGTH, cache_dir=cache)
    assert loser.stats["cache"] == "miss" and loser.cache_path == winner["features"].cache_path
    assert manifest_build(loser.cache_path) == winner["build"]  # the winner's entry, untouched
    assert contents(loser) == contents(winner["features"])
    assert any("written by another process first" in r.getMessage() for r in caplog.records)
    assert [p.name for p in cache.iterdir()] == [loser.cache_path.name]


CONCURRENT_WRITER = """
import json, logging, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_faults import MAX_LENGTH, make_data
from mtexp.data import build_features
from mtexp.data import features
from mtexp.encoder import SentenceEncoder

cache, barrier, me, writers = Path(sys.argv[1]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
real_tokenize = features._tokenize_all

def tokenise_then_wait_for_the_others(*args, **kwargs):
    built = real_tokenize(*args, **kwargs)
    (barrier / me).touch()
    deadline = time.time() + 240
    while len(list(barrier.iterdir())) < writers and time.time() < deadline:
        time.sleep(0.01)
    return built

features._tokenize_all = tokenise_then_wait_for_the_others
logging.basicConfig(level=logging.INFO)
result = build_features(make_data(), SentenceEncoder.random_init(seed=0).tokenizer, MAX_LENGTH,
                        cache_dir=cache)
rows = {"/".join(key): ds.to_list() for key, ds in result.datasets.items()}
print(json.dumps({"status": result.stats["cache"], "entry": str(result.cache_path), "rows": rows}))
"""


@pytest.mark.slow
def test_processes_writing_the_same_entry_at_once_leave_one_whole_entry(tmp_path: Path) -> None:
    cache, barrier, writers = tmp_path / "cache", tmp_path / "barrier", 3
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(cache), str(TESTS_DIR), str(barrier),
                          str(n), str(writers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO_ROOT)
        for n in range(writers)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert {r["status"] for r in results} == {"miss"}
    assert len({r["entry"] for r in results}) == 1
    assert all(r["rows"] == results[0]["rows"] for r in results)
    entry = Path(results[0]["entry"])
    assert [p.name for p in cache.iterdir()] == [entry.name]
    assert cache_module.verify_entry(entry)
    lost = sum("written by another process first" in stderr for _, stderr in outputs)
    assert lost == writers - 1
