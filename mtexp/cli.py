"""The command-line tools beside training.

`mtexp-encode` embeds sentences with the Task 1 encoder and shows what came out;
`mtexp-predict` runs a trained model of a run directory on new sentences.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import transformers

from mtexp.encoder import SentenceEncoder
from mtexp.io import atomic_write_bytes, atomic_write_text
from mtexp.pooling import POOLING_MODES
from mtexp.predict import format_prediction, load_model
from mtexp.savedmodel import SavedModelError

PREVIEW_DIMS = 5


class _EncodeParser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> NoReturn:
    """Print `prog: error: message` and exit with status 2, as argparse does for usage errors."""
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _EncodeParser(
        prog="mtexp-encode",
        description="Encode sentences into fixed-length embeddings (Task 1).",
    )
    parser.add_argument("sentences", nargs="*", help="sentences to encode")
    parser.add_argument("--input", type=Path, help="text file with one sentence per line")
    parser.add_argument("--output", type=Path, help="write the embeddings to this .npy file")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="hub name, folder or bundled name")
    parser.add_argument("--pooling", choices=POOLING_MODES, default="mean")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--max-length", type=_positive_int, default=256,
                        help="tokens per sentence (longer ones are truncated, with a warning); at most "
                             "the model's position limit (512 for the default)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="bf16 runs under bfloat16 autocast (faster on CPUs with bf16 units); "
                             "auto (the default) picks it where the CPU or GPU runs it natively")
    return parser


def read_sentences(path: Path, prog: str = "mtexp-encode") -> list[str]:
    """The non-blank lines of a UTF-8 file, stripped; `SystemExit` naming the file otherwise."""
    try:
        return sentences_in(path)
    except ValueError as error:
        raise SystemExit(f"{prog}: {error}") from None


def sentences_in(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 file, stripped; `ValueError` naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"input is a directory, not a file: {path}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def format_preview(sentences: list[str], embeddings: np.ndarray, limit: int = 5) -> str:
    lines = [f"embeddings: shape {embeddings.shape}, dtype {embeddings.dtype}"]
    for sentence, vector in zip(sentences[:limit], embeddings[:limit], strict=True):
        head = ", ".join(f"{value:+.4f}" for value in vector[:PREVIEW_DIMS])
        norm = float(np.linalg.norm(vector))
        lines.append(f"  {sentence[:48]!r:52} [{head}, ...]  norm {norm:.3f}")
    if len(sentences) > limit:
        lines.append(f"  ... {len(sentences) - limit} more")
    return "\n".join(lines)


def encode_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sentences = _encode_inputs(parser, args)
    _check_output(parser.prog, args.output)
    transformers.utils.logging.disable_progress_bar()
    encoder = _load_encoder(parser.prog, args)
    truncated, longest = count_truncated(encoder.tokenizer, sentences, args.max_length)
    if truncated:
        print(f"{parser.prog}: warning: {truncated} of {len(sentences)} sentence(s) have more than "
              f"--max-length {args.max_length} tokens (the longest {longest}) and were truncated to it",
              file=sys.stderr)
    embeddings = encoder.encode(sentences, batch_size=args.batch_size, precision=args.precision)
    print(format_preview(sentences, embeddings))
    if args.output is not None:
        try:
            atomic_write_bytes(args.output, _npy_bytes(embeddings))
        except OSError as error:
            reason = error.strerror or error
            raise SystemExit(f"{parser.prog}: cannot write {args.output}: {reason}") from None
        print(f"wrote {args.output}")
    return 0


def _encode_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    sentences = list(args.sentences)
    if args.input is not None:
        try:
            from_file = sentences_in(args.input)
        except ValueError as error:
            usage_error(parser.prog, f"argument --input: {error}")
        if not from_file:
            usage_error(parser.prog, f"argument --input: {args.input} holds no sentences "
                                     "(empty or blank lines only); expected one sentence per line")
        sentences += from_file
    if not sentences:
        usage_error(parser.prog, "give sentences as arguments or with --input FILE")
    return sentences


def _check_output(prog: str, output: Path | None) -> None:
    """Fail before any work when `--output` cannot be a file."""
    if output is None:
        return
    if output.is_dir():
        usage_error(prog, f"argument --output: {output} is a directory; expected a file name, e.g. "
                          f"{output / 'embeddings.npy'}")
    existing = next((p for p in output.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        usage_error(prog, f"argument --output: {existing} is a file, so {output} cannot be written")


def _load_encoder(prog: str, args: argparse.Namespace) -> SentenceEncoder:
    """The encoder of `--model`, with `--max-length` checked against its position limit."""
    folder = Path(args.model).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        usage_error(prog, f"argument --model: {folder} holds no config.json; expected a model folder "
                          "(config.json, weights, tokenizer files) or a hub name")
    try:
        encoder = SentenceEncoder.from_pretrained(
            args.model, pooling=args.pooling, normalize=args.normalize, max_length=args.max_length
        )
    except (OSError, ValueError, KeyError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        usage_error(prog, f"argument --model: cannot load {args.model!r} as an encoder ({reason})")
    limit = position_limit(encoder)
    if limit is not None and args.max_length > limit:
        usage_error(prog, f"argument --max-length: {args.max_length} is more than {args.model!r} "
                          f"can take; expected at most {limit} (its position limit)")
    return encoder


def position_limit(encoder: SentenceEncoder) -> int | None:
    """The most tokens the backbone can take: its position embeddings, or the tokenizer's
    `model_max_length` where that is lower (RoBERTa-style offsets); None when neither is known."""
    limits = [getattr(encoder.backbone.config, "max_position_embeddings", None),
              getattr(encoder.tokenizer, "model_max_length", None)]
    known = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(known) if known else None


def count_truncated(tokenizer: Any, sentences: list[str], max_length: int,
                    batch_size: int = 1024) -> tuple[int, int]:
    """(how many sentences have more than `max_length` tokens, special tokens included; the
    longest one's token count)."""
    truncated = longest = 0
    for start in range(0, len(sentences), batch_size):
        ids = tokenizer(sentences[start : start + batch_size], truncation=False, verbose=False)["input_ids"]
        lengths = [len(row) for row in ids]
        truncated += sum(length > max_length for length in lengths)
        longest = max(longest, *lengths)
    return truncated, longest


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtexp-predict",
        description="Predict every task of a trained model on new sentences (words split at whitespace).",
    )
    parser.add_argument("run_dir", type=Path,
                        help="run directory of mtexp-train (model.json, model.safetensors, tokenizer/)")
    parser.add_argument("sentences", nargs="*", help="sentences to predict")
    parser.add_argument("--input", type=Path,
                        help="text file with one sentence per line (blank lines skipped)")
    parser.add_argument("--output", type=Path, help="write one JSON object per sentence to this .jsonl file")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of readable lines")
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu or cuda")
    return parser


def predict_main(argv: list[str] | None = None) -> int:
    parser = build_predict_parser()
    args = parser.parse_intermixed_args(argv)  # options may come between sentences
    sentences = list(args.sentences)
    if args.input is not None:
        from_file = read_sentences(args.input, prog=parser.prog)
        if not from_file:
            raise SystemExit(f"{parser.prog}: input file {args.input} holds no sentences (empty or blank)")
        sentences += from_file
    if not sentences:
        parser.error("give sentences as arguments or with --input FILE")
    transformers.utils.logging.disable_progress_bar()
    try:
        model = load_model(args.run_dir, device=args.device)
    except SavedModelError as error:
        raise SystemExit(f"{parser.prog}: {error}") from None
    predictions = model.predict(sentences, batch_size=args.batch_size)
    lines = [json.dumps(prediction, ensure_ascii=False) for prediction in predictions]
    if args.output is not None:
        atomic_write_text(args.output, "".join(line + "\n" for line in lines))
        print(f"wrote {len(lines)} predictions to {args.output}")
    else:
        print("\n".join(lines if args.json else map(format_prediction, predictions)))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(encode_main())
