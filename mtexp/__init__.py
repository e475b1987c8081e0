"""mtexp: measure what freezing and layer-wise learning rates do to a multi-task transformer."""

from mtexp.encoder import EncoderOutput, SentenceEncoder

__all__ = ["EncoderOutput", "SentenceEncoder"]
__version__ = "0.1.0"
