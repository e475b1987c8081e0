"""`mtexp-encode` checks its arguments: one-line errors naming the argument, exit status 2, and a
warning for sentences cut to --max-length."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mtexp.cli import encode_main
from mtexp.encoder import SentenceEncoder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of the tiny random BERT (512 positions), quick to load."""
    folder = tmp_path_factory.mktemp("tiny-model")
    encoder = SentenceEncoder.random_init(seed=0)
    encoder.backbone.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    return folder


def usage_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """The one line `mtexp-encode argv` prints before exiting with status 2."""
    with pytest.raises(SystemExit) as exit_:
        encode_main(list(argv))
    captured = capsys.readouterr()
    assert exit_.value.code == 2, captured.err
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtexp-encode: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(("make_args", "expected"), [
    (lambda d: ["--input", str(d / "empty.txt")], r"argument --input: .*empty\.txt holds no sentences"),
    (lambda d: ["--input", str(d / "blank.txt")], r"argument --input: .*blank\.txt holds no sentences"),
    (lambda d: ["--input", str(d / "folder")], r"argument --input: input is a directory, not a file"),
    (lambda d: ["--input", str(d / "nope.txt")], r"argument --input: input file not found: .*nope\.txt"),
    (lambda d: ["--input", str(d / "latin1.txt")], r"argument --input: .*latin1\.txt is not UTF-8"),
    (lambda d: ["--output", str(d / "folder"), "hi"], r"argument --output: .*folder is a directory"),
    (lambda d: ["--output", str(d / "empty.txt" / "x.npy"), "hi"], r"argument --output: .*\.txt is a file"),
    (lambda d: ["--batch-size", "0", "hi"], r"argument --batch-size: must be >= 1, got 0"),
    (lambda d: ["--batch-size", "-1", "hi"], r"argument --batch-size: must be >= 1, got -1"),
    (lambda d: ["--batch-size", "many", "hi"], r"argument --batch-size: expected a whole number >= 1"),
    (lambda d: ["--max-length", "0", "hi"], r"argument --max-length: must be >= 1, got 0"),
    (lambda d: ["--model", str(d / "folder"), "hi"], r"argument --model: .*folder holds no config\.json"),
    (lambda d: [], r"give sentences as arguments or with --input FILE"),
], ids=["empty file", "blank file", "input folder", "missing input", "not utf-8", "output folder",
        "output under a file", "batch 0", "batch -1", "batch text", "max length 0", "model folder",
        "nothing"])
def test_bad_arguments_are_one_line_usage_errors(tmp_path: Path, capsys, make_args, expected: str) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    line = usage_error(capsys, *make_args(tmp_path))
    assert re.search(expected, line), line


def test_max_length_beyond_the_position_limit_is_a_usage_error(tiny_model: Path, capsys) -> None:
    line = usage_error(capsys, "--model", str(tiny_model), "--max-length", "100000", "hi")
    assert "argument --max-length: 100000" in line and "expected at most 512 (its position limit)" in line


def test_truncated_sentences_are_counted_in_a_warning(tiny_model: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "sentences.txt"
    source.write_text("word " * 5000 + "\nshort one\n" + "two words " * 20 + "\n", encoding="utf-8")
    target = tmp_path / "out.npy"
    assert encode_main(["--model", str(tiny_model), "--input", str(source), "--output", str(target),
                        "--max-length", "16"]) == 0
    err = capsys.readouterr().err
    assert ("mtexp-encode: warning: 2 of 3 sentence(s) have more than --max-length 16 tokens "
            "(the longest 5002) and were truncated to it") in err
    assert np.load(target).shape == (3, 64)
    assert encode_main(["--model", str(tiny_model), "--max-length", "512", "short one"]) == 0
    assert "warning" not in capsys.readouterr().err
