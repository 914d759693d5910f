"""The settings of ``soraflow serve`` (one typed place; the CLI flags map onto these fields)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/soraflow/serve`` (``~/.local/share/soraflow/serve``): jobs are data, not a cache."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "soraflow" / "serve"


@dataclass
class ServeConfig:
    model: Path | None = None  # model folder; None: the model shipped in the package
    host: str = "127.0.0.1"  # any address but a loopback one needs api_key
    port: int = 8000
    workers: int = 1  # generation processes, each with the model loaded once
    api_key: str | None = None  # checked on every route when set
    data_dir: Path = Path()  # the job store and job files; default_data_dir() when left empty
    max_queue: int = 100  # unfinished (queued + running) jobs accepted; past it: 429
    rate_limit: float = 30.0  # submissions a minute per client (0: no limit)
    login_rate_limit: float = 10.0  # sign-in attempts a minute per client
    expire_after: float = 24 * 3600.0  # seconds a finished job and its files are kept
    max_upload_mb: float = 64.0  # per uploaded file
    max_attempts: int = 2  # runs of a job whose worker died before it is marked failed
    device: str = "cpu"
    dtype: str = "auto"
    offload: str | None = None  # "model" / "sequential": CPU offload onto device (SoraPipeline.from_pretrained)
    threads: int | None = None  # torch threads per worker; None: the cores shared out among the workers

    def __post_init__(self):
        if self.data_dir == Path():
            self.data_dir = default_data_dir()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


__all__ = ["ServeConfig", "default_data_dir"]
