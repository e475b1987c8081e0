"""Typed run configuration: every group's node is checked before any work starts.

An unknown key, a wrong type or an impossible value raises `ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtexp.budget import BudgetConfig
from mtexp.data.config import DataConfig, data_config
from mtexp.data.types import DataError
from mtexp.freezing import FreezingConfig
from mtexp.optim import OptimConfig, ScheduleConfig
from mtexp.pooling import POOLING_MODES
from mtexp.tasks import HEAD_ALIASES

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the device runs it natively (mtexp.precision)
DEVICES = ("auto", "cpu", "cuda")
# csv: steps.csv in the run directory; tensorboard and mlflow: experiment trackers (mtexp.trackers).
LOGGERS = ("none", "csv", "tensorboard", "mlflow")


# What `dev.<task>.<metric>` may name (mtexp.metrics): sequence tasks' and token tasks' scores,
# and the joint sentence accuracy of data with both.
TASK_METRICS = ("accuracy", "macro_f1", "precision", "recall", "f1", "token_accuracy")
JOINT_METRIC = "dev.joint.sentence_accuracy"


def is_metric_name(metric: str) -> bool:
    """`dev.score`, `dev.joint.sentence_accuracy` or `dev.<task>.<metric>` of `TASK_METRICS`."""
    parts = str(metric).split(".")
    if metric in ("dev.score", JOINT_METRIC):
        return True
    return len(parts) == 3 and parts[0] == "dev" and bool(parts[1]) and parts[2] in TASK_METRICS


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


@dataclass
class BackboneConfig:
    name: str = "minilm_l6"
    name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    random_init: bool = False
    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 2
    intermediate_size: int = 128
    pooling: str = "mean"
    max_length: int = 64
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _require(self.pooling in POOLING_MODES, "backbone.pooling", f"one of {POOLING_MODES}", self.pooling)
        _require(self.max_length >= 8, "backbone.max_length", ">= 8", self.max_length)
        if self.random_init:
            _require(self.num_layers >= 1, "backbone.num_layers", ">= 1", self.num_layers)
            divisible = self.hidden_size > 0 and self.hidden_size % max(self.num_heads, 1) == 0
            _require(divisible, "backbone.hidden_size", "a positive multiple of num_heads", self.hidden_size)


@dataclass
class ModelConfig:
    head_hidden: int | None = None
    head_dropout: float = 0.1
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(0 <= self.head_dropout < 1, "model.head_dropout", "in [0, 1)", self.head_dropout)
        if self.head_hidden is not None:
            _require(self.head_hidden > 0, "model.head_hidden", "> 0 or null", self.head_hidden)
        for task, weight in self.loss_weights.items():
            _require(weight >= 0, f"model.loss_weights.{task}", ">= 0", weight)


@dataclass
class EvalConfig:
    cka_sentences: int = 256
    sts_path: str | None = None
    sts_max_pairs: int | None = None
    train_subset: int = 1000

    def __post_init__(self) -> None:
        _require(self.cka_sentences >= 0, "eval.cka_sentences", ">= 0", self.cka_sentences)
        _require(self.train_subset >= 0, "eval.train_subset", ">= 0", self.train_subset)


@dataclass
class EarlyStoppingConfig:
    metric: str = "dev.score"
    mode: str = "max"
    patience: int | None = None

    def __post_init__(self) -> None:
        _require(self.mode in ("max", "min"), "trainer.early_stopping.mode", "max or min", self.mode)
        _require(is_metric_name(self.metric), "trainer.early_stopping.metric",
                 f"dev.score or dev.<task>.<metric> with <metric> one of {TASK_METRICS}", self.metric)
        if self.patience is not None:
            _require(self.patience >= 1, "trainer.early_stopping.patience", ">= 1 or null", self.patience)


@dataclass
class TrainerConfig:
    """The `trainer` node: the loop's settings; `budget` says how long it trains
    (`mtexp.budget`; its default, `epochs`, trains `epochs` epochs)."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    grad_accumulation: int = 1
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    resume: Any = False
    overwrite: bool = False
    feature_cache: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "trainer.epochs", ">= 1", self.epochs)
        _require(self.batch_size >= 1, "trainer.batch_size", ">= 1", self.batch_size)
        _require(self.eval_batch_size >= 1, "trainer.eval_batch_size", ">= 1", self.eval_batch_size)
        _require(self.grad_accumulation >= 1, "trainer.grad_accumulation", ">= 1", self.grad_accumulation)
        if self.max_grad_norm is not None:
            _require(self.max_grad_norm > 0, "trainer.max_grad_norm", "> 0 or null", self.max_grad_norm)
        _require(self.precision in PRECISIONS, "trainer.precision", f"one of {PRECISIONS}", self.precision)
        _require(self.device in DEVICES, "trainer.device", f"one of {DEVICES}", self.device)
        if self.threads is not None:
            _require(self.threads >= 1, "trainer.threads", ">= 1 or null", self.threads)
        resume_ok = isinstance(self.resume, (bool, str))
        _require(resume_ok, "trainer.resume", "true, false or a run directory", self.resume)
        resumes = self.resume is True or str(self.resume).lower() not in ("", "false")
        _require(not (self.overwrite and resumes), "trainer.overwrite",
                 "false when trainer.resume is set (resume continues the run, overwrite replaces it)",
                 self.overwrite)


@dataclass
class LoggerConfig:
    """Per-step records and experiment trackers; `name` may join several with `+`, e.g. `csv+mlflow`."""

    name: str = "none"
    every_steps: int = 10
    # mlflow: null tracks into sqlite:///<output root>/mlflow.db, unless MLFLOW_TRACKING_URI is set
    tracking_uri: str | None = None
    experiment: str = "mtexp"

    def __post_init__(self) -> None:
        names = logger_names(self.name)
        expected = f"one of {LOGGERS}, or several joined by '+'"
        _require(bool(names) and all(n in LOGGERS for n in names), "logger.name", expected, self.name)
        _require(names == ("none",) or "none" not in names, "logger.name", "none alone", self.name)
        _require(self.every_steps >= 1, "logger.every_steps", ">= 1", self.every_steps)
        _require(bool(self.experiment), "logger.experiment", "a non-empty name", self.experiment)


def logger_names(name: str) -> tuple[str, ...]:
    """`logger.name` as its parts: `"csv+mlflow"` -> `("csv", "mlflow")`."""
    return tuple(part.strip() for part in str(name).split("+") if part.strip())


@dataclass
class PathsConfig:
    """Roots that the presets interpolate (`${paths.data_root}/snips`); conf/paths/default.yaml."""

    data_root: str | None = None
    cache_root: str | None = None


@dataclass
class RunConfig:
    """The validated run configuration (the `data` node is converted by `mtexp.data`)."""

    seed: int
    backbone: BackboneConfig
    model: ModelConfig
    freezing: FreezingConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    eval: EvalConfig
    data: DataConfig
    paths: PathsConfig = field(default_factory=PathsConfig)


GROUP_SCHEMAS: dict[str, type] = {
    "backbone": BackboneConfig,
    "model": ModelConfig,
    "freezing": FreezingConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "eval": EvalConfig,
    "paths": PathsConfig,
}
TOP_LEVEL_KEYS = {*GROUP_SCHEMAS, "data", "seed", "hydra"}


def validate(cfg: DictConfig) -> RunConfig:
    """Check every node of a composed config; raise `ConfigError` naming the first bad key."""
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}: expected one of {sorted(TOP_LEVEL_KEYS)}")
    _require("data" in cfg and cfg.data is not None, "data", "a data config group", None)
    seed = cfg.get("seed", 0)
    _require(isinstance(seed, int) and seed >= 0, "seed", "an integer >= 0", seed)
    resolved = _resolved(cfg)
    nodes = {group: _typed_node(group, schema, resolved.get(group))
             for group, schema in GROUP_SCHEMAS.items()}
    return RunConfig(seed=seed, data=_data_node(resolved["data"]), **nodes)


def _data_node(node: Any) -> DataConfig:
    """The data node converted once (`mtexp.data.data_config`); its errors become `ConfigError`."""
    try:
        return data_config(node)
    except DataError as error:
        raise ConfigError(str(error)) from None


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, so that a key may interpolate another group's value."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(f"{key}: {_first_line(error)}") from None
    plain.pop("hydra", None)
    return plain


def _typed_node(group: str, schema: type, node: Any) -> Any:
    if node is None:
        node = {}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
        raise ConfigError(f"{group}.{key}: {_first_line(error)}") from None
    except ValueError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(f"{group}.") else f"{group}: {message}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _require(condition: bool, key: str, expected: str, got: Any) -> None:
    if not condition:
        raise ConfigError(f"{key} must be {expected}, got {got!r}")


def check_task_names(run: RunConfig, task_names: list[str]) -> None:
    """Config keys that name tasks must name tasks of the loaded data."""
    named = {
        "model.loss_weights": list(run.model.loss_weights),
        "optim.lr_heads": list(run.optim.lr_heads),
        "freezing.head": [run.freezing.head] if run.freezing.head else [],
    }
    for key, names in named.items():
        for name in names:
            if name not in task_names and name not in HEAD_ALIASES:
                raise ConfigError(f"{key} names {name!r}, which is not a task: tasks are {task_names}")
    metric = run.trainer.early_stopping.metric.split(".")
    if len(metric) == 3 and metric[1] != "joint" and metric[1] not in task_names:
        raise ConfigError(f"trainer.early_stopping.metric names {metric[1]!r}, which is not a task: "
                          f"expected dev.score or dev.<task>.<metric> with a task of {task_names}")
