"""A trained run's model reloaded from its directory alone: weights, scores, predictions, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors import safe_open
from seqeval.scheme import IOB2, Entities

from mtexp import load_model
from mtexp.checkpoint import load_checkpoint
from mtexp.cli import predict_main
from mtexp.config import validate
from mtexp.data import build_features, load_data
from mtexp.evaluate import evaluate_split, predict
from mtexp.model import MultiTaskModel
from mtexp.predict import entities, format_prediction, iob2_spans
from mtexp.rundir import BEST, LAST, MODEL_CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR, SavedModelError
from mtexp.seeding import seed_everything
from mtexp.train import CONF_DIR, run
from mtexp.trainer import BatchRunner

# early_stopping.mode=min keeps the first epoch as "best": the saved model must be that one,
# restored after the last epoch, not the last epoch's weights.
TINY = ["backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=0",
        "eval.train_subset=0", "trainer.early_stopping.mode=min"]
NEW_SENTENCES = [
    "turn on the kitchen lights",
    "what time is it",
    "set the bedroom temperature to twenty degrees and then start a timer for five minutes",
    "Cancel my timer!",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, MultiTaskModel, dict]:
    """A tiny run, and the model object it trained (captured as it is built)."""
    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = compose("config", overrides=TINY)
    built: list[MultiTaskModel] = []
    init = MultiTaskModel.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MultiTaskModel, "__init__", recording_init)
        metrics = run(config, run_dir)
    assert len(built) == 1
    return run_dir, built[0], metrics


@pytest.fixture(scope="module")
def reloaded(trained) -> MultiTaskModel:
    return load_model(trained[0])


def dev_sentences(run_dir: Path) -> tuple[list[str], object, object]:
    """The run's dev sentences, rebuilt from its config.yaml, with the run config and data."""
    config = validate(OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text())))
    seed_everything(config.seed)
    data = load_data(config.data, seed=config.seed)
    examples = data.corpora[0].splits["dev"]
    return [" ".join(example.words) for example in examples], config, data


def test_run_directory_describes_its_model(trained):
    run_dir, model, _ = trained
    described = json.loads((run_dir / MODEL_CONFIG_FILE).read_text())
    labels = json.loads((run_dir / "labels.json").read_text())
    assert described["backbone"]["config"]["model_type"] == "bert"
    assert described["backbone"]["config"]["hidden_size"] == 64
    assert "_name_or_path" not in described["backbone"]["config"]  # no local path in a shared run
    assert {key: described["backbone"][key] for key in ("pooling", "max_length", "normalize")} == {
        "pooling": "mean", "max_length": 64, "normalize": False}
    assert described["heads"] == {"hidden": None, "dropout": 0.1}
    kinds = {task["name"]: task["kind"] for task in described["tasks"]}
    assert kinds == {"intent": "sequence", "slots": "token"}
    assert {task["name"]: task["labels"] for task in described["tasks"]} == labels
    assert described["loss_weights"] == {"intent": 1.0, "slots": 1.0}
    assert (run_dir / TOKENIZER_DIR / "tokenizer.json").is_file()
    with safe_open(run_dir / MODEL_FILE, framework="pt") as weights:
        names = set(weights.keys())
        assert weights.metadata() == {"seed": "0"}
    assert "encoder.embeddings.word_embeddings.weight" in names
    assert {name for name in names if name.startswith("heads.")} == {
        name for name in model.state_dict() if name.startswith("heads.")}


def test_reloaded_weights_are_the_best_epochs_bitwise(trained, reloaded):
    run_dir, model, metrics = trained
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 2
    final = model.state_dict()
    loaded = reloaded.state_dict()
    assert list(loaded) == list(final)
    assert all(torch.equal(loaded[name], final[name].cpu()) for name in final)
    best = load_checkpoint(run_dir, BEST)["model"]
    last = load_checkpoint(run_dir, LAST)["model"]
    assert all(torch.equal(loaded[name], best[name]) for name in best)
    assert not all(torch.equal(loaded[name], last[name]) for name in last)
    assert not reloaded.training


def test_loading_needs_only_the_model_files(trained, tmp_path, monkeypatch):
    run_dir, _, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run_dir / MODEL_CONFIG_FILE, copy)
    shutil.copy(run_dir / MODEL_FILE, copy)
    shutil.copytree(run_dir / TOKENIZER_DIR, copy / TOKENIZER_DIR)

    def no_backbone_source(*args, **kwargs):
        raise AssertionError("loading a saved model looked for the backbone's source")

    monkeypatch.setattr("mtexp.encoder.resolve_backbone", no_backbone_source)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(copy)
    assert model.predict(NEW_SENTENCES) == load_model(run_dir).predict(NEW_SENTENCES)


def test_reloaded_model_reproduces_the_run_metrics(trained, reloaded):
    run_dir, _, _ = trained
    _, config, data = dev_sentences(run_dir)
    features = build_features(data, reloaded.encoder.tokenizer, reloaded.encoder.max_length,
                              label_all_tokens=config.data.label_all_tokens, cache_dir=None)
    runner = BatchRunner(config, reloaded, data, features, torch.device("cpu"))
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    for split in ("dev", "test"):
        scores = evaluate_split(data, split, runner.forward, runner.batches_for)
        assert json.loads(json.dumps(scores)) == on_disk[split]


def test_predict_gives_the_labels_the_evaluation_scores(trained, reloaded):
    """predict() on the dev sentences: the same labels and word tags as the evaluation path."""
    run_dir, _, _ = trained
    sentences, config, data = dev_sentences(run_dir)
    corpus = data.corpora[0]
    features = build_features(data, reloaded.encoder.tokenizer, reloaded.encoder.max_length, cache_dir=None)
    runner = BatchRunner(config, reloaded, data, features, torch.device("cpu"))
    tasks = {task.name: task for task in data.tasks}
    expected = predict(runner.forward, runner.batches_for(corpus, "dev"), corpus.splits["dev"], tasks,
                       corpus.tasks)
    predictions = reloaded.predict(sentences, batch_size=config.trainer.eval_batch_size)
    indices = range(len(sentences))
    assert [p["intent"]["label"] for p in predictions] == [expected["intent"][i] for i in indices]
    assert [p["slots"]["tags"] for p in predictions] == [expected["slots"][i] for i in indices]


def test_reloaded_predictions_equal_the_trained_models(trained, reloaded):
    _, model, _ = trained
    model.train()
    expected = model.predict(NEW_SENTENCES, batch_size=3)
    assert model.training, "predict() leaves the model in the mode it found it in"
    assert reloaded.predict(NEW_SENTENCES, batch_size=3) == expected
    model.eval()


def test_predictions_keep_input_order_and_shape(reloaded):
    sentences = NEW_SENTENCES * 3
    batched = reloaded.predict(sentences, batch_size=2)
    one_by_one = [reloaded.predict([sentence], batch_size=1)[0] for sentence in sentences]
    assert [p["text"] for p in batched] == sentences
    for prediction, alone in zip(batched, one_by_one, strict=True):
        assert prediction["words"] == prediction["text"].split()
        assert len(prediction["slots"]["tags"]) == len(prediction["words"])
        assert prediction["intent"]["label"] == alone["intent"]["label"]
        assert prediction["intent"]["probability"] == pytest.approx(alone["intent"]["probability"], abs=1e-5)
        assert 0.0 < prediction["intent"]["probability"] <= 1.0
        assert prediction["slots"]["tags"] == alone["slots"]["tags"]


def test_predict_rejects_a_string_and_empty_sentences(reloaded):
    with pytest.raises(TypeError, match="list of sentences"):
        reloaded.predict("turn on the lights")
    with pytest.raises(ValueError, match="sentence 1 has no words"):
        reloaded.predict(["turn on the lights", "   "])
    assert reloaded.predict([]) == []


def test_spans_agree_with_the_tags(trained, reloaded):
    sentences, _, _ = dev_sentences(trained[0])
    predictions = reloaded.predict(sentences + NEW_SENTENCES)
    tags = [prediction["slots"]["tags"] for prediction in predictions]
    strict = Entities(tags, IOB2, suffix=False).entities  # how the slot F1 reads them
    assert sum(len(prediction["slots"]["entities"]) for prediction in predictions) > 0
    for prediction, expected in zip(predictions, strict, strict=True):
        words = prediction["words"]
        assert prediction["slots"]["entities"] == [
            {"type": entity.tag, "start": entity.start, "end": entity.end,
             "text": " ".join(words[entity.start : entity.end])}
            for entity in expected
        ]


def test_iob2_spans_follow_the_strict_scheme():
    tags = ["B-a", "I-a", "O", "I-b", "B-b", "I-a", "B-a", "B-a", "I-a", "I-a"]
    assert iob2_spans(tags) == [("a", 0, 2), ("b", 4, 5), ("a", 6, 7), ("a", 7, 10)]
    assert iob2_spans(["O", "O"]) == [] and iob2_spans([]) == []
    words = ["play", "miles", "davis", "now"]
    assert entities(["O", "B-artist", "I-artist", "O"], words) == [
        {"type": "artist", "start": 1, "end": 3, "text": "miles davis"}]


def test_format_prediction_is_one_readable_line():
    prediction = {
        "text": "play miles davis", "words": ["play", "miles", "davis"],
        "intent": {"label": "PlayMusic", "probability": 0.98765},
        "slots": {"tags": ["O", "B-artist", "I-artist"],
                  "entities": [{"type": "artist", "start": 1, "end": 3, "text": "miles davis"}]},
    }
    assert format_prediction(prediction) == (
        "play miles davis  ->  intent: PlayMusic (0.988)  slots: [artist: miles davis]")
    prediction["slots"]["entities"] = []
    assert format_prediction(prediction).endswith("slots: -")


def test_cli_writes_one_json_line_per_sentence_in_order(trained, reloaded, tmp_path, capsys):
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(["", *NEW_SENTENCES[::-1], "  "]) + "\n", encoding="utf-8")
    target = tmp_path / "out" / "predictions.jsonl"
    assert predict_main([str(trained[0]), "--input", str(source), "--output", str(target)]) == 0
    assert f"wrote 4 predictions to {target}" in capsys.readouterr().out
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == reloaded.predict(NEW_SENTENCES[::-1])


def test_cli_prints_readable_lines_or_json(trained, reloaded, capsys):
    assert predict_main([str(trained[0]), NEW_SENTENCES[0], NEW_SENTENCES[1]]) == 0
    expected = reloaded.predict(NEW_SENTENCES[:2])
    assert capsys.readouterr().out.splitlines() == [format_prediction(p) for p in expected]
    assert predict_main([str(trained[0]), NEW_SENTENCES[0], "--json", NEW_SENTENCES[1]]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == expected


def cli_error(*argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict_main(list(argv))
    return str(exit_info.value.code)


def test_cli_names_what_is_missing(trained, tmp_path, capsys):
    run_dir = str(trained[0])
    assert cli_error(str(tmp_path / "nowhere"), "hi") == (
        f"mtexp-predict: run directory not found: {tmp_path / 'nowhere'}")
    no_model = f"mtexp-predict: {tmp_path} holds no saved model: model.json not found"
    assert cli_error(str(tmp_path), "hi") == f"{no_model} (not a run directory of mtexp-train)"
    (tmp_path / "status.json").write_text('{"status": "running"}')
    assert cli_error(str(tmp_path), "hi") == (
        f"{no_model} (the run saves its model when it completes; see status.json)")
    shutil.copy(trained[0] / MODEL_FILE, tmp_path)
    assert cli_error(str(tmp_path), "hi") == (
        f"{no_model} (its model.safetensors predates model.json; train the run again to save both)")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert cli_error(run_dir, "--input", str(empty)) == (
        f"mtexp-predict: input file {empty} holds no sentences (empty or blank)")
    assert cli_error(run_dir, "--input", str(tmp_path / "gone.txt")) == (
        f"mtexp-predict: input file not found: {tmp_path / 'gone.txt'}")
    assert cli_error(run_dir) == "2"  # argparse's usage error
    assert "give sentences as arguments or with --input FILE" in capsys.readouterr().err


def test_load_model_rejects_an_incomplete_or_foreign_model(trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    shutil.rmtree(copy / TOKENIZER_DIR)
    with pytest.raises(SavedModelError, match="incomplete model: tokenizer not found"):
        load_model(copy)
    (copy / MODEL_CONFIG_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(SavedModelError, match="not an mtexp model config"):
        load_model(copy)
