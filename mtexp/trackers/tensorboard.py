"""TensorBoard event files with the config as hparams (`logger=tensorboard`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mtexp.config import RunConfig
from mtexp.rundir import TENSORBOARD_DIR, RunDir
from mtexp.trackers.base import Tracker, require_package, resolved_config

if TYPE_CHECKING:
    from mtexp.trainer import Trainer


class TensorBoardTracker(Tracker):
    """Event files in `<run>/tensorboard_logs`: scalars, and the config as hparams of the same run, so
    that TensorBoard's HParams tab lists every run of `--logdir` with its config and metrics."""

    requirement = "tensorboard>=2.14,<3"

    def __init__(self, run: RunConfig, run_dir: RunDir) -> None:
        super().__init__(run, run_dir)
        require_package("tensorboard", self.requirement, "tensorboard")
        self.writer_class = require_package("torch.utils.tensorboard", self.requirement,
                                            "tensorboard").SummaryWriter
        self.log_dir = run_dir.path / TENSORBOARD_DIR  # made by the writer, once training starts
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """A resumed run drops what its first attempt logged after the checkpoint it resumes."""
        resumed_at = trainer.state.step
        self.open(purge_step=resumed_at + 1 if resumed_at else None)

    def open(self, purge_step: int | None = None) -> Any:
        """The event file's writer, opened with the config as hparams on first use."""
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.log_dir), purge_step=purge_step)
            config = resolved_config(self.run, self.run_dir)
            self.writer.file_writer.add_summary(session_start_summary(config))
        return self.writer

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        writer = self.open()
        for tag, value in values.items():
            writer.add_scalar(tag, value, global_step=step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        super().on_epoch_end(trainer, row)
        self.open().flush()

    def close(self, error: BaseException | None) -> None:
        if self.writer is None:
            return
        self.writer.file_writer.add_summary(session_end_summary(failed=error is not None))
        self.writer.close()
        self.writer = None


def session_start_summary(config: Mapping[str, Any]) -> Any:
    """The hparams plugin's session start: the config's values (None as "None", bools as bools)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key, value in config.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = value
        else:
            info.hparams[key].string_value = str(value)
    return hparams_summary("session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(failed: bool) -> Any:
    """The hparams plugin's session end, with the run's status."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return hparams_summary("session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=info))


def hparams_summary(kind: str, data: Any) -> Any:
    """A summary the HParams tab reads (tag `_hparams_/<kind>`); built from the protocol buffers
    alone, as `tensorboard.plugins.hparams.summary` needs TensorFlow."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata

    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    value = Summary.Value(tag=f"_hparams_/{kind}", metadata=SummaryMetadata(plugin_data=plugin))
    return Summary(value=[value])
