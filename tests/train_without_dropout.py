"""`mtexp.train` with every dropout probability set to 0, for runs that must compare closely.

With `MTEXP_TEST_LOCAL_GRADIENTS=1` each rank of a torchrun job also steps on its own
gradients (no all-reduce): the control that tests/test_distributed.py tells apart from the real
thing. Not a test module; tests run it as a script.
"""

from __future__ import annotations

import os

import torch

import mtexp.trainer
from mtexp.train import main

_dropout_init = torch.nn.Dropout.__init__


def _without_dropout(self: torch.nn.Dropout, p: float = 0.5, inplace: bool = False) -> None:
    _dropout_init(self, 0.0, inplace)


if __name__ == "__main__":
    torch.nn.Dropout.__init__ = _without_dropout
    if os.environ.get("MTEXP_TEST_LOCAL_GRADIENTS") == "1":
        assert callable(mtexp.trainer.average_gradients), "the trainer's gradient averaging moved"
        mtexp.trainer.average_gradients = lambda parameters, context: None
    main()
