"""Where independent pieces of research run: local processes (all cores by default) or a Ray cluster.

A sweep's trials and a walk-forward's windows are deterministic replays that each write their own journal, so
they are ideal units of distributed work: ``map(fn, items)`` runs ``fn(item)`` for each item somewhere and yields
``(index, result)`` pairs as they complete (completion order; the caller orders them when it needs to). ``fn``
and the items must pickle (module-level functions; Ray pickles ``fn`` by reference, so a cluster's workers need
gatebot installed). A large input every task reads (the candles) goes as ``shared=``: once into each local
worker (the pool's initializer), or once into Ray's object store (``ray.put``), and is read at most once per
worker process; ``fn`` is then called as ``fn(item, shared)``.

A worker lost mid-task (killed, out of memory, its node gone) has its task run again, at most ``retries`` more
times; an exception raised by ``fn`` itself is not retried (a replay is deterministic: it would raise again) and
comes out of ``map`` as it was raised. Executors are context managers: leaving the block ends their workers.
A script that drives a local executor (``run_sweep``, ``run_walk_forward``) must start under
``if __name__ == "__main__":``: each spawned worker imports the script, and one without the guard starts its
work again in every worker, which multiprocessing answers with a hang, not an error (the CLI and the benchmarks
have it).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_RETRIES = 2
"""A task whose worker is lost runs again at most this many more times (then :class:`WorkerLost`)."""
LOCAL_RAY = "local"
"""``--ray local``: start a Ray instance on this machine (loopback only) for the run, rather than join one."""

log = logging.getLogger("gatebot.executors")


class ExecutorError(Exception):
    """The executor could not be used (Ray not installed, no cluster at the address): one line."""


class WorkerLost(ExecutorError):
    """A task's worker died on every attempt (the bound of retries spent)."""


class Executor(Protocol):
    def map(self, fn: Callable[..., R], items: Sequence[Any], shared: Any = None) -> Iterator[tuple[int, R]]:
        """``(index, fn(items[index]))`` (``fn(item, shared)`` when ``shared`` is given), in completion order."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    @property
    def workers(self) -> int:
        """How many tasks run at once."""
        ...


_NO_SHARED = object()
_shared: Any = _NO_SHARED
"""A local worker's copy of ``shared`` (set once by the pool's initializer)."""


def _init_worker(has_shared: bool, shared: Any) -> None:
    global _shared
    _shared = shared if has_shared else _NO_SHARED  # the sentinel is this process's own, never a pickled copy


def _call_local(fn: Callable[..., Any], item: Any) -> Any:
    return fn(item) if _shared is _NO_SHARED else fn(item, _shared)


class LocalExecutor:
    """Processes on this machine (``spawn``: each worker a fresh interpreter, nothing inherited by fork), at most
    ``workers`` tasks in flight at once so that a lost worker is blamed on the tasks it could have been running."""

    def __init__(self, workers: int | None = None, *, retries: int = DEFAULT_RETRIES) -> None:
        if workers is not None and workers < 1:
            raise ExecutorError(f"workers must be at least 1, got {workers}")
        self._workers = workers or os.cpu_count() or 1
        self.retries = retries
        self._pool: cf.ProcessPoolExecutor | None = None
        self._pool_shared: Any = _NO_SHARED
        self.lost = 0
        """Tasks run again because their worker died (for the caller's summary and the tests)."""

    @property
    def workers(self) -> int:
        return self._workers

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _pool_for(self, shared: Any) -> cf.ProcessPoolExecutor:
        """The pool whose workers hold ``shared`` (a new one for another shared object, or after a lost worker)."""
        if self._pool is None or self._pool_shared is not shared:
            self._close()
            self._pool = cf.ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker,
                                                initargs=(shared is not _NO_SHARED,
                                                          None if shared is _NO_SHARED else shared))
            self._pool_shared = shared
        return self._pool

    def map(self, fn: Callable[..., R], items: Sequence[Any], shared: Any = _NO_SHARED) -> Iterator[tuple[int, R]]:
        shared = _NO_SHARED if shared is None else shared
        queue = list(range(len(items)))
        queue.reverse()  # popped from the end: items start in order
        attempts = [0] * len(items)
        running: dict[cf.Future[Any], int] = {}
        try:
            while queue or running:
                pool = self._pool_for(shared)
                while queue and len(running) < self._workers:
                    i = queue.pop()
                    running[pool.submit(_call_local, fn, items[i])] = i
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                lost: list[int] = []
                for future in done:
                    i = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        lost.append(i)
                        continue
                    yield i, result
                if lost:  # every task in flight may have been on the lost worker: each is blamed once
                    lost += running.values()
                    for future in running:
                        future.cancel()
                    running.clear()
                    for i in lost:
                        attempts[i] += 1
                        if attempts[i] > self.retries:
                            raise WorkerLost(f"task {i} lost its worker {attempts[i]} times (retries: {self.retries})")
                    self.lost += len(lost)
                    log.warning("a worker was lost; running %d task(s) again", len(lost))
                    queue = sorted([*queue, *lost], reverse=True)
                    self._drop_broken_pool()
        finally:
            for future in running:
                future.cancel()

    def _drop_broken_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._pool_shared = _NO_SHARED


_ray_cache: dict[str, Any] = {}
"""A Ray worker's copy of each shared object it has read (by object id): read once per worker process."""


def _call_ray(fn: Callable[..., Any], item: Any, boxed: list[Any] | None) -> Any:
    """The task body on a Ray worker. ``boxed`` is ``[ObjectRef]`` (a ref inside a list is not fetched by Ray
    before the call), so the worker fetches the shared object only the first time it sees it."""
    if boxed is None:
        return fn(item)
    import ray

    ref = boxed[0]
    key = ref.hex()
    if key not in _ray_cache:
        _ray_cache.clear()  # one shared object at a time: an earlier map's is not kept alive
        _ray_cache[key] = ray.get(ref)
    return fn(item, _ray_cache[key])


class RayExecutor:
    """Tasks on a Ray cluster at ``address`` (``ray://host:10001``, ``host:6379``, ``auto``), or on a Ray
    instance started here for the run (``local``: loopback only, no dashboard, ``workers`` CPUs). Ray is an
    optional extra (``pip install 'gatebot[ray]'``), imported only here. A Ray already initialised in this
    process (a test's ``ray.init``) is used as it is and left running."""

    def __init__(self, address: str, workers: int | None = None, *, retries: int = DEFAULT_RETRIES) -> None:
        self.address = address
        self._workers = workers
        self.retries = retries
        self._ray: Any = None
        self._owned = False
        self._remote: Any = None

    @property
    def workers(self) -> int:
        if self._ray is None:
            return self._workers or 1
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def __enter__(self) -> Self:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--ray needs Ray, an optional extra: pip install 'gatebot[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine unasked
            try:
                if self.address == LOCAL_RAY:
                    ray.init(num_cpus=self._workers or os.cpu_count() or 1, include_dashboard=False,
                             _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
                else:
                    ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            except Exception as exc:  # ConnectionError, ValueError...: one line naming the address
                raise ExecutorError(f"--ray {self.address}: cannot start or join Ray: "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self._owned = True
        self._remote = ray.remote(max_retries=self.retries, retry_exceptions=False)(_call_ray)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._owned and self._ray is not None:
            self._ray.shutdown()
        self._owned = False

    def map(self, fn: Callable[..., R], items: Sequence[Any], shared: Any = None) -> Iterator[tuple[int, R]]:
        if self._remote is None:
            raise ExecutorError("RayExecutor.map outside its with-block")
        ray = self._ray
        boxed = None if shared is None else [ray.put(shared)]  # into the object store once
        refs = {self._remote.remote(fn, item, boxed): i for i, item in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # fn raised: its own exception, not Ray's wrapper
                        raise exc.as_instanceof_cause() from None
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.LocalRayletDiedError) as exc:
                        raise WorkerLost(f"task {refs[ref]} lost its worker {self.retries + 1} times: "
                                         f"{type(exc).__name__}") from None
                    yield refs[ref], result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def executor_for(ray_address: str | None, workers: int | None) -> Executor:
    """``--ray ADDRESS`` chooses Ray; otherwise local processes (``--workers``, default every core)."""
    if ray_address:
        return RayExecutor(ray_address, workers)
    return LocalExecutor(workers)


# --- a file every task reads, shipped once -----------------------------------------------------------------


class SharedFile:
    """A file's bytes (a candle CSV) shipped as ``shared=``: :meth:`path` gives each worker a path to read it
    at, the original when it is there with the same content (local workers, a cluster with a shared folder),
    else a copy written once per worker process into its temporary folder."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.origin = str(path.resolve())
        self.data = path.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    def path(self) -> Path:
        found = _materialized.get(self.sha256)
        if found is not None:
            return found
        origin = Path(self.origin)
        try:
            same = origin.is_file() and hashlib.sha256(origin.read_bytes()).hexdigest() == self.sha256
        except OSError:
            same = False
        if same:
            found = origin
        else:
            folder = Path(tempfile.mkdtemp(prefix="gatebot-shared-"))
            found = folder / self.name
            found.write_bytes(self.data)
        _materialized[self.sha256] = found
        return found


_materialized: dict[str, Path] = {}
