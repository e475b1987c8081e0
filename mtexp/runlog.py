"""A run's own log file, `train.log` in its run directory, opened only once the run holds it.

Hydra's job logging writes to the console alone (`conf/hydra/job_logging/mtexp.yaml`): a file
opened by Hydra would be created or appended to before the run knows whether it may use its
directory. `RunLog` holds the run's log records in memory from its start; when the run takes its
directory (`open`) they are written to `train.log`, and every later record follows them there. A
run that is refused (a live run holds the directory, or a finished one that it neither resumes
nor overwrites) never opens the file: its records went to the console only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

# The format of Hydra's default job log, so that the file reads as it always has.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
HELD_RECORDS = 10_000  # records kept before the file opens; the oldest go first


class HeldRecords(logging.Handler):
    """Keeps the records it is given, up to `limit`, for a handler that comes later."""

    def __init__(self, limit: int = HELD_RECORDS) -> None:
        super().__init__()
        self.limit = limit
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) > self.limit:
            del self.records[0]


class RunLog:
    """The run's log records, held until `open(path)`, then appended to the file at `path`.

    Use as a context manager around the run; the handlers are attached to the root logger
    inside the block and removed (the file closed) when it ends."""

    def __init__(self) -> None:
        self.held: HeldRecords | None = HeldRecords()
        self.file: logging.FileHandler | None = None

    def __enter__(self) -> RunLog:
        logging.getLogger().addHandler(self.held)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self, path: Path) -> None:
        """Append the held records, then every later one, to `path` (created if absent)."""
        if self.file is not None or self.held is None:
            return
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.removeHandler(self.held)
        for record in self.held.records:
            handler.handle(record)
        self.held = None
        root.addHandler(handler)
        self.file = handler

    def close(self) -> None:
        root = logging.getLogger()
        if self.held is not None:
            root.removeHandler(self.held)
            self.held = None
        if self.file is not None:
            root.removeHandler(self.file)
            self.file.close()
            self.file = None
