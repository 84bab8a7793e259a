"""Where the windows of a raster stage run: threads of this process, or a dask.distributed cluster.

A raster stage splits its output into independent windows and maps a function over them. With
``compute.dask_scheduler`` unset (the default) the windows run in a thread pool of the stage's
process (GDAL and NumPy release the GIL, so threads use the cores). With the address of a running
dask scheduler (``tcp://host:8786``) the same function runs on the cluster's workers through
``distributed``'s ``concurrent.futures`` interface, so the stage's code is the same either way:

    with window_executor(threads, config["compute"]["dask_scheduler"]) as executor:
        for result in executor.map(process_window, windows):
            ...

On a cluster the function and its arguments are pickled (cloudpickle) and sent to the workers:
give it paths and windows, not open datasets, and keep every file it reads or writes on a file
system that all workers see. Results come back to the submitting process, so they should be
window-sized (the stage writes them), never whole rasters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from s2landcover.errors import InputError

CONNECT_TIMEOUT_S = 30.0  # seconds window_executor waits for a dask scheduler by default


@contextlib.contextmanager
def window_executor(
    threads: int,
    scheduler_address: str | None = None,
    connect_timeout_s: float | None = None,
) -> Iterator[Executor]:
    """An executor for a stage's windows: local threads, or a dask.distributed cluster.

    Args:
        threads: worker threads of the local pool (ignored on a cluster, whose workers have their
            own threads); at least 1.
        scheduler_address: the ``compute.dask_scheduler`` config key: None or "" for local
            threads, else a dask scheduler address (``tcp://host:8786``, or a ``LocalCluster``'s
            ``scheduler_address``).
        connect_timeout_s: how long to wait for the scheduler before giving up (seconds); None:
            the module's :data:`CONNECT_TIMEOUT_S`, read at call time (so that a test or a caller
            that does not pass the timeout through can shorten it).

    Yields:
        A :class:`concurrent.futures.Executor` (``submit``/``map``). On leaving the context the
        executor waits for what was submitted and is shut down (the cluster keeps running).

    Raises:
        InputError: ``threads`` below 1; an address given but the ``distributed`` package missing;
            a scheduler that cannot be reached.

    Memory: local threads hold what the stage's function holds per window; on a cluster the
    submitting process holds the results that have come back and not yet been consumed.
    """
    if threads < 1:
        raise InputError(f"threads = {threads}; expected at least 1")
    if not scheduler_address:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="window") as pool:
            yield pool
        return
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            f"compute.dask_scheduler = {scheduler_address!r} needs the `distributed` package, "
            "which is not installed; run `pip install distributed` (the version of your dask), "
            "or set compute.dask_scheduler to null to use local threads"
        ) from None
    if connect_timeout_s is None:
        connect_timeout_s = CONNECT_TIMEOUT_S
    try:
        client = Client(scheduler_address, timeout=connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(
            f"compute.dask_scheduler = {scheduler_address!r}: no dask scheduler reached within "
            f"{connect_timeout_s:g} s ({error}); expected the address of a running scheduler "
            "such as tcp://host:8786 (start one with `dask scheduler`), or null for local threads"
        ) from None
    try:
        with client.get_executor() as executor:
            yield executor
    finally:
        client.close()


def window_executor_from_config(compute_cfg: Mapping[str, Any], threads: int) -> Any:
    """:func:`window_executor` for the validated ``compute`` config section and ``threads``."""
    return window_executor(threads, compute_cfg["dask_scheduler"])
