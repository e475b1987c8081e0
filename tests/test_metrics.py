from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from mtexp.metrics import (
    convergence_measures,
    joint_sentence_accuracy,
    primary_score,
    sequence_metrics,
    token_metrics,
)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    labels: tuple[str, ...] = ()


TASKS = [Task("intent", "sequence"), Task("slots", "token")]


def test_sequence_metrics_hand_computed() -> None:
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "d"]
    # per label F1: a 2/3, b 2/3, c 0, d 0 (d only predicted) -> macro 1/3
    result = sequence_metrics(gold, pred)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx(1 / 3)


def test_sequence_metrics_perfect_and_errors() -> None:
    assert sequence_metrics(["x", "y"], ["x", "y"]) == {"accuracy": 1.0, "macro_f1": 1.0}
    with pytest.raises(ValueError, match="3 gold sequence labels but 2 predicted"):
        sequence_metrics(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        sequence_metrics([], [])


def test_token_metrics_partly_wrong_entity() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    # sentence 0: PER cut short (wrong under strict matching), LOC right;
    # sentence 1: LOC right, plus a spurious ORG missing its B- (no entity under strict IOB2).
    pred = [["B-PER", "O", "O", "B-LOC"], ["I-ORG", "B-LOC", "I-LOC"]]
    result = token_metrics(gold, pred)
    # 3 gold entities, 3 predicted (PER[0:1], LOC, LOC), 2 correct
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["per_entity"] == {"LOC": 1.0, "PER": 0.0}
    assert result["token_accuracy"] == pytest.approx(5 / 7)


def test_token_metrics_b_followed_by_other_type() -> None:
    gold = [["B-artist", "I-artist", "O"]]
    pred = [["B-artist", "I-album", "O"]]
    result = token_metrics(gold, pred)
    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["per_entity"]["artist"] == 0.0


def test_token_metrics_perfect_and_no_entities() -> None:
    tags = [["B-a", "I-a", "O"], ["O", "B-b"]]
    result = token_metrics(tags, tags)
    assert (result["precision"], result["recall"], result["f1"]) == (1.0, 1.0, 1.0)
    empty = token_metrics([["O", "O"]], [["O", "O"]])
    assert empty["f1"] == 0.0
    assert empty["per_entity"] == {}
    assert empty["token_accuracy"] == 1.0


def test_token_metrics_errors_name_the_sentence() -> None:
    with pytest.raises(ValueError, match="2 gold tag sequences but 1 predicted"):
        token_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 3 predicted"):
        token_metrics([["O"], ["O", "B-x"]], [["O"], ["O", "B-x", "O"]])
    with pytest.raises(ValueError, match="sentence 0: predicted tag 'PER' is not IOB2"):
        token_metrics([["B-PER"]], [["PER"]])


def test_joint_sentence_accuracy() -> None:
    gold_intents = ["play", "play", "book"]
    pred_intents = ["play", "book", "book"]
    gold_tags = [["B-a", "O"], ["O"], ["B-b", "I-b"]]
    pred_tags = [["B-a", "O"], ["O"], ["B-b", "O"]]
    # sentence 0 right; 1 wrong intent; 2 one slot tag wrong
    assert joint_sentence_accuracy(gold_intents, pred_intents, gold_tags, pred_tags) == 1 / 3
    with pytest.raises(ValueError, match="pred_tags has 2 items"):
        joint_sentence_accuracy(gold_intents, pred_intents, gold_tags, pred_tags[:2])
    with pytest.raises(ValueError, match="sentence 2"):
        joint_sentence_accuracy(gold_intents, pred_intents, gold_tags, [*pred_tags[:2], ["O"]])


def test_primary_score_is_the_mean_of_the_headline_metrics() -> None:
    gold = {"intent": ["a", "b"], "slots": [["B-x", "O"], ["O"]]}
    pred = {"intent": ["a", "a"], "slots": [["B-x", "O"], ["O"]]}
    result = {"intent": sequence_metrics(gold["intent"], pred["intent"]),
              "slots": token_metrics(gold["slots"], pred["slots"])}
    assert result["intent"]["accuracy"] == 0.5
    assert result["slots"]["f1"] == 1.0
    assert primary_score(result, TASKS) == pytest.approx(0.75)
    assert primary_score(result, {"intent": "sequence"}) == 0.5
    with pytest.raises(KeyError, match=r"slots\.f1"):
        primary_score({"intent": {"accuracy": 1.0}, "slots": {}}, TASKS)
    with pytest.raises(ValueError, match="unknown kind"):
        primary_score(result, [Task("intent", "regression")])


def test_convergence_from_lists() -> None:
    dev = [0.5, 0.9, 0.96, 1.0, 0.98]
    train = [0.4, 0.95, 1.0, 1.0, 1.0]
    result = convergence_measures(dev, train)
    assert result["best_epoch"] == 4
    assert result["epochs_to_95pct"] == 3  # 0.95 * 1.0 first reached at epoch 3
    assert result["overfit_gap"] == pytest.approx(0.0)
    result = convergence_measures([0.8, 0.8, 0.7])
    assert result == {"epochs_to_95pct": 1, "best_epoch": 1, "overfit_gap": None}
    assert convergence_measures([])["best_epoch"] is None
    with pytest.raises(ValueError, match="2 train scores for 3 dev scores"):
        convergence_measures([0.1, 0.2, 0.3], [0.1, 0.2])


def test_convergence_from_history_frame() -> None:
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "dev.intent.accuracy": [0.6, 0.9, 0.8],
            "dev.slots.f1": [0.2, 0.7, 0.9],
            "train.intent.accuracy": [0.7, 1.0, 1.0],
            "train.slots.f1": [0.3, 0.8, 1.0],
        }
    )
    # mean dev: 0.4, 0.8, 0.85; 95% of 0.85 = 0.8075 -> epoch 3
    result = convergence_measures(history, tasks=TASKS)
    assert result["best_epoch"] == 3
    assert result["epochs_to_95pct"] == 3
    assert result["overfit_gap"] == pytest.approx(1.0 - 0.85)
    by_column = convergence_measures(history, dev_column="dev.intent.accuracy")
    assert by_column == {"epochs_to_95pct": 2, "best_epoch": 2, "overfit_gap": None}
    with pytest.raises(KeyError, match=r"dev\.x\.accuracy"):
        convergence_measures(history, tasks=[Task("x", "sequence")])
