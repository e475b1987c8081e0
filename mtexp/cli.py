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

import numpy as np
import transformers

from mtexp.encoder import SentenceEncoder
from mtexp.io import atomic_write_bytes, atomic_write_text
from mtexp.pooling import POOLING_MODES
from mtexp.predict import format_prediction, load_model
from mtexp.rundir import SavedModelError

PREVIEW_DIMS = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtexp-encode",
        description="Encode sentences into fixed-length embeddings (Task 1).",
    )
    parser.add_argument("sentences", nargs="*", help="sentences to encode")
    parser.add_argument("--input", type=Path, help="text file with one sentence per line")
    parser.add_argument("--output", type=Path, help="write the embeddings to this .npy file")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="hub name, folder or bundled name")
    parser.add_argument("--pooling", choices=POOLING_MODES, default="mean")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16 runs under bfloat16 autocast (faster on CPUs with bf16 units)")
    return parser


def read_sentences(path: Path, prog: str = "mtexp-encode") -> list[str]:
    """The non-blank lines of a UTF-8 file, stripped; `SystemExit` naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SystemExit(f"{prog}: input file not found: {path}") from None
    except IsADirectoryError:
        raise SystemExit(f"{prog}: input is a directory, not a file: {path}") from None
    except UnicodeDecodeError as error:
        raise SystemExit(f"{prog}: {path} is not UTF-8 text ({error.reason})") from None
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
    args = build_parser().parse_args(argv)
    sentences = list(args.sentences)
    if args.input is not None:
        sentences += read_sentences(args.input)
    if not sentences:
        build_parser().error("give sentences as arguments or with --input FILE")
    transformers.utils.logging.disable_progress_bar()
    encoder = SentenceEncoder.from_pretrained(
        args.model, pooling=args.pooling, normalize=args.normalize, max_length=args.max_length
    )
    embeddings = encoder.encode(sentences, batch_size=args.batch_size, precision=args.precision)
    print(format_preview(sentences, embeddings))
    if args.output is not None:
        atomic_write_bytes(args.output, _npy_bytes(embeddings))
        print(f"wrote {args.output}")
    return 0


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
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(encode_main())
