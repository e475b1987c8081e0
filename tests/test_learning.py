"""Training learns: a few epochs of the tiny backbone on the small built-in data beat chance."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from hydra import compose, initialize_config_dir

from mtexp.build import load_data_checked
from mtexp.config import validate
from mtexp.train import CONF_DIR, run

OVERRIDES = ["backbone=tiny", "data.size=400", "trainer=quick", "trainer.epochs=5", "optim.lr=3e-3",
             "eval.cka_sentences=0", "eval.train_subset=0"]


def majority_rate(cfg, split: str) -> float:
    """The accuracy of always answering the most common intent of `split`."""
    data = load_data_checked(validate(cfg))
    intents = Counter(example.labels["intent"] for example in data.corpora[0].splits[split])
    return max(intents.values()) / sum(intents.values())


def test_the_train_loss_falls_and_dev_intent_accuracy_beats_the_majority_class(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=OVERRIDES)
    metrics = run(cfg, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    losses = history["train.loss"].tolist()
    assert len(losses) == 5 and losses[-1] < 0.6 * losses[0], losses  # measured: 5.88 -> 2.01
    majority = majority_rate(cfg, "dev")
    accuracy = metrics["dev"]["intent"]["accuracy"]
    assert accuracy > majority + 0.3, (accuracy, majority)  # measured: 0.83
    assert history["dev.slots.f1"].iloc[-1] > history["dev.slots.f1"].iloc[0]
