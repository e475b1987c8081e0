"""`mtexp-encode` and `mtexp-predict` end to end, offline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def run_encode(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mtexp.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


def test_encode_from_file_to_npy(tmp_path):
    source = tmp_path / "sentences.txt"
    source.write_text("first sentence\n\nsecond one, a bit longer\n", encoding="utf-8")
    target = tmp_path / "out.npy"
    result = run_encode("--input", str(source), "--output", str(target), "--normalize", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shape (2, 384)" in result.stdout
    embeddings = np.load(target)
    assert embeddings.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_encode_without_input_is_a_usage_error(tmp_path):
    result = run_encode(cwd=tmp_path)
    assert result.returncode == 2
    assert "give sentences" in result.stderr


def test_encode_reports_a_missing_file(tmp_path):
    result = run_encode("--input", str(tmp_path / "nope.txt"), cwd=tmp_path)
    assert result.returncode != 0
    assert "input file not found" in result.stderr


def run_predict(*args: str, cwd) -> subprocess.CompletedProcess:
    """`mtexp-predict` as its console script runs it: `predict_main()` reading sys.argv."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = "import sys; from mtexp.cli import predict_main; sys.exit(predict_main())"
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


def test_predict_reports_a_run_directory_without_a_model(tmp_path):
    result = run_predict(str(tmp_path), "turn on the lights", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mtexp-predict: {tmp_path} holds no saved model: model.json not found "
        "(not a run directory of mtexp-train)"
    )
    assert result.stdout == ""
