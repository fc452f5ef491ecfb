"""The directory prometheus-client's multiprocess mode shares between worker processes.

prometheus-client decides once, when it is first imported, whether metric values live in
memory or in per-process files, and it reads that from the environment variable
PROMETHEUS_MULTIPROC_DIR. Everything else the proxy reads once into Settings; this variable is
the one exception, because the library reads it itself in each worker process, before any of
our code could hand it a value. So with PROXY_WORKERS > 1 the proxy makes a fresh directory
(under TMPDIR), sets the variable in its own environment before uvicorn spawns the workers
(they inherit it) and removes the directory when the server exits: no values of an earlier
run are merged in, and nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from proxy.settings import Settings

ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_metrics(settings: Settings) -> bool:
    """Whether this server's metrics are shared by several worker processes."""
    return settings.metrics and settings.workers > 1


@contextmanager
def shared_metrics_directory(settings: Settings) -> Iterator[None]:
    """Around the whole server run: the workers' shared directory, when there are workers."""
    if not multiprocess_metrics(settings):
        yield
        return
    directory = tempfile.mkdtemp(prefix="llm-stream-proxy-metrics-")
    previous = os.environ.get(ENVIRONMENT_VARIABLE)
    os.environ[ENVIRONMENT_VARIABLE] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if previous is None:
            os.environ.pop(ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[ENVIRONMENT_VARIABLE] = previous
