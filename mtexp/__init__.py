"""mtexp: measure what freezing and layer-wise learning rates do to a multi-task transformer."""

from mtexp.encoder import EncoderOutput, SentenceEncoder
from mtexp.model import MultiTaskModel
from mtexp.predict import load_model

__all__ = ["EncoderOutput", "MultiTaskModel", "SentenceEncoder", "load_model"]
__version__ = "0.1.0"
