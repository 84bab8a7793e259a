"""Tests of s2landcover.parallel: local threads, a dask.distributed cluster, clear errors."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.parallel import window_executor, window_executor_from_config


def window_sums(image: np.ndarray, windows: list[tuple[int, int, int, int]], executor) -> list:
    """Sum of each (row, col, height, width) window of ``image``, computed on the executor."""

    def total(window: tuple[int, int, int, int]) -> int:
        row, col, height, width = window
        return int(image[row : row + height, col : col + width].sum())

    return list(executor.map(total, windows))


@pytest.fixture
def image_and_windows() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    image = np.arange(64 * 48, dtype=np.int64).reshape(64, 48)
    windows = [(r, c, 16, 16) for r in range(0, 64, 16) for c in range(0, 48, 16)]
    return image, windows


def test_local_threads_give_the_window_results_in_order(image_and_windows) -> None:
    image, windows = image_and_windows
    with window_executor(3, None) as executor:
        assert isinstance(executor, ThreadPoolExecutor)
        sums = window_sums(image, windows, executor)
    expected = [int(image[r : r + h, c : c + w].sum()) for r, c, h, w in windows]
    assert sums == expected
    assert sum(sums) == int(image.sum())  # the windows tile the image exactly


def test_local_threads_run_in_parallel_threads_and_shut_down() -> None:
    barrier = threading.Barrier(2, timeout=10)
    with window_executor(2, "") as executor:  # "" means local, like null
        names = list(executor.map(lambda _: (barrier.wait(), threading.current_thread().name)[1],
                                  range(2)))  # fmt: skip
    assert len(set(names)) == 2  # both waited at the barrier at once: two threads
    assert all(name.startswith("window") for name in names)
    with pytest.raises(RuntimeError):
        executor.submit(int, 1)  # shut down on leaving the context


def test_config_default_is_local_threads() -> None:
    compute = validate_config({})["compute"]
    assert compute["dask_scheduler"] is None
    with window_executor_from_config(compute, 2) as executor:
        assert isinstance(executor, ThreadPoolExecutor)
        assert executor.submit(sum, [1, 2, 3]).result() == 6


def test_threads_below_one_is_an_input_error() -> None:
    with pytest.raises(InputError, match="threads = 0"):
        with window_executor(0, None):
            pass


def test_missing_distributed_names_the_key_and_the_fix(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(InputError, match="pip install distributed") as error:
        with window_executor(2, "tcp://scheduler:8786"):
            pass
    assert "compute.dask_scheduler = 'tcp://scheduler:8786'" in str(error.value)


def test_local_cluster_runs_the_same_windows(image_and_windows) -> None:
    distributed = pytest.importorskip("distributed", reason="distributed is not installed")
    image, windows = image_and_windows
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        with window_executor(1, cluster.scheduler_address) as executor:
            assert not isinstance(executor, ThreadPoolExecutor)
            sums = window_sums(image, windows, executor)
    assert sums == [int(image[r : r + h, c : c + w].sum()) for r, c, h, w in windows]


def test_unreachable_scheduler_is_an_input_error() -> None:
    pytest.importorskip("distributed", reason="distributed is not installed")
    with pytest.raises(InputError, match="no dask scheduler reached"):
        with window_executor(1, "tcp://127.0.0.1:9", connect_timeout_s=2):
            pass
