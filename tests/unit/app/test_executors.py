"""The executors: every item's result once, ``shared`` read once per worker, a task's own exception raised as it
is, a lost worker's task run again (a bounded number of times); on local processes and on a local Ray."""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatebot.app.executors import Executor, LocalExecutor, RayExecutor, SharedFile, WorkerLost, executor_for

_loads = 0
"""In a worker: how many times a :class:`Counted` was unpickled in this process."""


class Counted:
    """A shared object that counts, in the process that receives it, how often it was unpickled."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __getstate__(self) -> dict[str, Any]:
        return {"payload": self.payload}

    def __setstate__(self, state: dict[str, Any]) -> None:
        global _loads
        _loads += 1
        self.payload = state["payload"]


def square(x: int) -> int:
    return x * x


def loads_seen(x: int, shared: Counted) -> tuple[int, int, int]:
    return x, os.getpid(), _loads + len(shared.payload) * 0


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def dies_once(item: tuple[int, str]) -> int:
    """Kills its own worker the first time it sees item 2 (a marker file says it did), then succeeds."""
    x, folder = item
    marker = Path(folder) / f"died-{x}"
    if x == 2 and not marker.exists():
        marker.write_text("once")
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def always_dies(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def _local() -> Iterator[Executor]:
    with LocalExecutor(2) as ex:
        yield ex


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the optional extra gatebot[ray]; make's set-up installs it)")
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        with RayExecutor("auto") as ex:
            yield ex
    else:
        yield from _local()


def test_every_item_once_in_completion_order_pairs(executor: Executor) -> None:
    got = list(executor.map(square, list(range(10))))
    assert sorted(got) == [(i, i * i) for i in range(10)]


def test_shared_is_read_once_per_worker(executor: Executor) -> None:
    shared = Counted(b"x" * 100_000)
    got = list(executor.map(loads_seen, list(range(12)), shared=shared))
    assert sorted(x for _, (x, _, _) in got) == list(range(12))
    per_worker: dict[int, set[int]] = {}
    for _, (_, pid, loads) in got:
        per_worker.setdefault(pid, set()).add(loads)
    assert all(seen == {1} for seen in per_worker.values()), per_worker


def test_a_tasks_own_exception_is_raised_as_it_is(executor: Executor) -> None:
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(executor.map(fails_on_three, list(range(6))))


def test_a_lost_worker_is_retried(executor: Executor, tmp_path: Path) -> None:
    got = list(executor.map(dies_once, [(i, str(tmp_path)) for i in range(5)]))
    assert sorted(got) == [(i, i) for i in range(5)]
    assert (tmp_path / "died-2").exists()  # it did die once
    if isinstance(executor, LocalExecutor):
        assert executor.lost >= 1


def test_retries_are_bounded(executor: Executor) -> None:
    with pytest.raises(WorkerLost, match="lost its worker"):
        list(executor.map(always_dies, [1]))


def test_executor_for_chooses() -> None:
    assert isinstance(executor_for(None, 3), LocalExecutor)
    assert executor_for(None, 3).workers == 3
    assert isinstance(executor_for("ray://head:10001", None), RayExecutor)


def test_shared_file_uses_the_original_or_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "candles.csv"
    src.write_bytes(b"timestamp,open\n1,2\n")
    shared = SharedFile(src)
    assert shared.path() == src.resolve()
    moved = SharedFile(src)
    moved.origin = str(tmp_path / "elsewhere.csv")  # as on a worker where the file is not
    moved.sha256 = "0" * 63 + "1"  # a different content key: not the cached path above
    moved.data = b"other\n"
    copy = moved.path()
    assert copy != src and copy.read_bytes() == b"other\n"
