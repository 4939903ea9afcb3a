"""Where toys run: serially here, in our own spawned process pool (workers replaced when they die,
and ended when the campaign's process dies), on dask (a Client, a running scheduler's address, or
workers in batch jobs through dask-jobqueue: SLURM, HTCondor, PBS, SGE, LSF), or on any
concurrent.futures Executor. One executor setting, validated once (resolve_executor), serves
run_toys, the analysis config and the command line.

A unit of toys lost with its worker (a cancelled or killed batch job, a dead pool process, dask's
KilledWorker or CancelledError) is not a failure of its toys: it is submitted again, up to
`max_losses` times, and then ExecutorError stops the campaign (the stored rows are kept). Only
exceptions raised by a toy itself become failed rows (worker.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..contract import backend_device
from ..core.exceptions import ConfigurationError, NPLMError, brief
from .worker import ToyTask, ToyUnit, run_toy_unit

logger = logging.getLogger(__name__)

#: Times a unit of toys may be lost with its worker and submitted again before the campaign stops.
MAX_LOSSES = 3
#: Units handed to our pool at a time, per worker (bounded memory, a small blast radius).
IN_FLIGHT_PER_WORKER = 2
#: Units in flight on an executor that is not ours (dask, ...), whose size we do not know.
EXTERNAL_IN_FLIGHT = 1024
#: Seconds between a pool worker's checks that its parent is still alive.
PARENT_CHECK_SECONDS = 0.5
#: Batch workers retire (their tasks move to other workers) at this fraction of the jobs' walltime,
#: staggered by LIFETIME_STAGGER of it, so that adapt replaces them before the batch system kills them.
LIFETIME_FRACTION = 0.9
LIFETIME_STAGGER = 0.05
#: Seconds between the checks for batch jobs that ended before their workers started, and the
#: command that lists the jobs a batch system still holds (queued, running or ending).
VANISHED_CHECK_SECONDS = 5.0
QUEUED_JOBS_COMMANDS = {"slurm": ["squeue", "--me", "--noheader", "--format=%i"]}
#: The executor of a campaign when none is named: a process pool over the available cores.
DEFAULT_EXECUTOR = "local"
#: The batch systems reached through dask-jobqueue (setting name: its cluster class).
BATCH_SYSTEMS = {"slurm": "SLURMCluster", "htcondor": "HTCondorCluster", "pbs": "PBSCluster", "sge": "SGECluster",
                 "lsf": "LSFCluster"}
#: The executor settings that name one (besides a number of processes).
EXECUTOR_SETTINGS = {
    "serial": "one toy after the other in this process",
    "local": "a process pool over the available cores (a SLURM job's, or all; one per GPU for a CUDA backend)",
    "dask:ADDRESS": "a running dask scheduler (e.g. dask:tcp://10.0.0.1:8786)",
    "slurm[:KEY=VALUE,...]": "workers in SLURM jobs through dask-jobqueue (keys: jobs, max_jobs, cores, memory, "
                             "walltime, queue, account, interface, log_directory; htcondor, pbs, sge and lsf "
                             "alike)",
}


class ExecutorError(NPLMError, RuntimeError):
    """The executor lost toys more often than allowed, or could not run them (not a failure of the
    toys themselves); the toys finished before are kept in the store."""


@dataclass(frozen=True)
class DaskScheduler:
    """A running dask scheduler: the campaign connects a Client to `address` for its duration."""

    address: str


def walltime_seconds(walltime: str) -> int:
    """A walltime [D-]HH:MM:SS in seconds; ValueError otherwise (shorter forms mean different things
    to different batch systems)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)", walltime.strip())
    if match is None:
        raise ValueError(f"walltime must be [D-]HH:MM:SS, got {walltime!r}")
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


class BatchJobs(BaseModel):
    """Dask workers in batch jobs, through dask-jobqueue: `jobs` jobs kept running by adapt (a
    cancelled, killed or retired job is replaced; up to max_jobs), each with `cores` single-threaded
    worker processes (one toy per core), `memory` per job and `walltime` ([D-]HH:MM:SS); workers
    retire at LIFETIME_FRACTION of the walltime. `interface`: the network interface of scheduler and
    workers ('ib0', 'lo'); `log_directory`: the jobs' output files. `directives`: extra job-script lines
    ('--constraint=cpu' for SLURM; 'Key = Value' for HTCondor, e.g. '+JobFlavour = "workday"')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["slurm", "htcondor", "pbs", "sge", "lsf"]
    jobs: int = Field(2, ge=1)
    max_jobs: int | None = Field(None, ge=1)
    cores: int = Field(1, ge=1)
    memory: str = "2GB"
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    disk: str = "1GB"
    interface: str | None = None
    log_directory: str | None = None
    python: str = sys.executable
    directives: tuple[str, ...] = ()

    @field_validator("walltime")
    @classmethod
    def _walltime_format(cls, value: str) -> str:
        walltime_seconds(value)
        return value

    def cluster(self) -> Any:
        """The dask-jobqueue cluster (no job submitted yet: adapt or scale starts them), its
        scheduler here on a free port with its dashboard on another."""
        try:
            import dask_jobqueue
        except ImportError:
            raise ConfigurationError(f"executor {self.system!r} needs dask-jobqueue: pip install "
                                     "'nplm-kernel[cluster]'.") from None
        seconds = walltime_seconds(self.walltime)
        lifetime = ["--lifetime", f"{int(seconds * LIFETIME_FRACTION)}s",
                    "--lifetime-stagger", f"{max(1, int(seconds * LIFETIME_STAGGER))}s"]
        options: dict[str, Any] = {
            "cores": self.cores, "processes": self.cores, "memory": self.memory, "interface": self.interface,
            "log_directory": self.log_directory, "python": self.python, "worker_extra_args": lifetime, "scheduler_options": {"dashboard_address": ":0"}}
        if self.system == "htcondor":
            directives = dict(line.split("=", 1) for line in self.directives)
            options |= {"disk": self.disk, "job_extra_directives": {"+MaxRuntime": str(seconds)}
                        | {key.strip(): value.strip() for key, value in directives.items()}}
        else:
            options |= {"walltime": self.walltime, "queue": self.queue, "account": self.account,
                        "job_extra_directives": list(self.directives)}
        return getattr(dask_jobqueue, BATCH_SYSTEMS[self.system])(**options)


def _batch_jobs(settings: dict[str, Any]) -> BatchJobs:
    try:
        return BatchJobs.model_validate(settings)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "executor"
        reason = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        given = "" if problem["type"] == "value_error" else f" (got {problem.get('input')!r})"
        raise ConfigurationError(f"executor {settings.get('system')!r}: {where}: "
                                 f"{reason.removeprefix('Value error, ')}{given}.") from None


def _parse_setting(text: str) -> Any:
    """'dask:ADDRESS' or 'SYSTEM[:KEY=VALUE,...]' as DaskScheduler or BatchJobs; None otherwise."""
    kind, _, rest = text.partition(":")
    if kind == "dask" and rest:
        return DaskScheduler(rest)
    if kind not in BATCH_SYSTEMS:
        return None
    settings: dict[str, Any] = {"system": kind}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            raise ConfigurationError(f"executor {text!r}: {item!r} is not KEY=VALUE.")
        settings[key.strip()] = value.strip()
    return _batch_jobs(settings)


def resolve_executor(setting: Any) -> Any:
    """The executor a setting names, checked: 'serial' (or None) -> None, 'local', a number of
    processes (an int or a string of digits) -> int, 'dask:ADDRESS' or {'kind': 'dask', 'address':
    ...} -> DaskScheduler, 'slurm' (or htcondor, pbs, sge, lsf) with settings, as
    'slurm:jobs=4,walltime=02:00:00' or {'kind': 'slurm', 'jobs': 4, ...} -> BatchJobs, or an
    executor object (a dask Client, a concurrent.futures.Executor, a DaskScheduler or BatchJobs) as
    given; ConfigurationError otherwise."""
    if setting is None or setting == "serial":
        return None
    if setting == "local":
        return "local"
    if isinstance(setting, str) and setting.isdigit() and int(setting) >= 1:
        return int(setting)
    if isinstance(setting, (int, np.integer)) and not isinstance(setting, bool) and setting >= 1:
        return int(setting)
    if isinstance(setting, (Executor, DaskScheduler, BatchJobs)) or _is_dask_client(setting):
        return setting
    if isinstance(setting, str) and (parsed := _parse_setting(setting)) is not None:
        return parsed
    if isinstance(setting, dict) and setting.get("kind") == "dask" and set(setting) == {"kind", "address"}:
        return DaskScheduler(str(setting["address"]))
    if isinstance(setting, dict) and setting.get("kind") in BATCH_SYSTEMS:
        return _batch_jobs({"system": setting["kind"], **{key: value for key, value in setting.items()
                                                            if key != "kind"}})
    raise ConfigurationError(
        f"executor must be 'serial', 'local' (all cores), a number of processes, 'dask:ADDRESS', a batch system "
        f"({', '.join(BATCH_SYSTEMS)}, e.g. 'slurm:jobs=4,walltime=01:00:00'), a dask Client or a "
        f"concurrent.futures.Executor, got {brief(setting)}.")


def _is_dask_client(executor: Any) -> bool:
    return hasattr(executor, "scatter") and hasattr(executor, "get_executor")


def _is_loss(error: BaseException) -> bool:
    """Whether `error` says that toys were lost with their worker, not raised by the toys."""
    if isinstance(error, (CancelledError, BrokenProcessPool, BrokenThreadPool)):
        return True
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(error, distributed.KilledWorker)


def _toys(unit: ToyUnit) -> str:
    shown = ", ".join(map(str, unit.keep[:8])) + (", ..." if len(unit.keep) > 8 else "")
    return f"toy {shown}" if len(unit.keep) == 1 else f"toys {shown}"


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _count_loss(losses: dict[ToyUnit, int], unit: ToyUnit, error: Exception, max_losses: int) -> None:
    """Count the loss of `unit` to `error`; ExecutorError when `error` is not a loss (the executor
    could not run the unit) or when the unit was lost more than max_losses times."""
    if not _is_loss(error):
        raise ExecutorError(f"the executor could not run {_toys(unit)}: {_error_text(error)} (not an error of the "
                            "toys: check that the workers run this package's version and can import the generator's "
                            "module).") from error
    losses[unit] = losses.get(unit, 0) + 1
    if losses[unit] > max_losses:
        raise ExecutorError(f"{_toys(unit)}: lost with the worker {losses[unit]} times (last: {_error_text(error)}), "
                            f"more than max_losses = {max_losses}: the executor keeps losing workers (jobs cancelled, "
                            "or killed at their walltime or memory limit; or workers that die loading the task, e.g. "
                            "a generator from a module they cannot import: see the job logs). The finished toys are "
                            "stored; resume to go on.") from error


_WORKER_TASK: ToyTask | None = None


def _exit_with_parent(parent: int) -> None:
    """Pool-worker thread: end this process once its parent has died (it is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _initialise_worker(task_path: str, parent: int, counter: Any, cuda: bool, started: Any) -> None:
    """Process-pool initialiser: keep the task (reference included) once per worker, read from the
    file the campaign wrote it to, and a watchdog that ends the worker when the campaign's process
    dies; count the worker as started. (A spawned process receives its initialiser's arguments
    through a pipe that it reads only after importing the main script: a task of more than the
    pipe's 64 KiB, sent that way to a worker that dies on that import, would block the campaign's
    process for ever instead of letting it report START_FAILURE.)
    On a CUDA campaign (`cuda`) each worker takes the next GPU (worker k: device k mod the number of
    GPUs), so that 'cuda' in the backend means one GPU per process."""
    global _WORKER_TASK
    with open(task_path, "rb") as stream:
        _WORKER_TASK = pickle.load(stream)
    if cuda:
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        torch.cuda.set_device(index % torch.cuda.device_count())
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    with started.get_lock():
        started.value += 1


def _uses_cuda(test: Any) -> bool:
    """Whether the test's backend computes on CUDA ('cuda', 'cuda:N', or 'auto' with a GPU)."""
    return backend_device(test.backend).type == "cuda"


def _run_in_worker(unit: ToyUnit) -> list[dict[str, Any]]:
    return run_toy_unit(_WORKER_TASK, unit)


def _pickled(task: ToyTask) -> bytes:
    """The task pickled, or ConfigurationError naming what must be picklable."""
    try:
        return pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigurationError(
            "toys run in other processes, so the test and the generator must be picklable (a module-level "
            f"function, a bound method or functools.partial, not a lambda or local function): {error}"
        ) from None


def available_cores() -> int:
    """The cores this process may use: those a SLURM job was given (SLURM_CPUS_PER_TASK), else the
    CPUs it may run on (its affinity), else every core of the machine."""
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if given.isdigit() and int(given) >= 1:
        return int(given)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _process_count(executor: Any, test: Any = None) -> int | None:
    """The number of pool processes for 'local' (every available core, or one per GPU when the
    backend computes on CUDA) or an int (None for other executors)."""
    if executor == "local":
        if test is not None and _uses_cuda(test):
            return torch.cuda.device_count()
        return available_cores()
    if isinstance(executor, (int, np.integer)) and not isinstance(executor, bool) and executor >= 1:
        return int(executor)
    return None


START_FAILURE = ("the pool's worker processes died while starting, before any toy ran (the worker's error is "
                 "printed above). Each worker imports the script that started the campaign: a script must start it "
                 "under `if __name__ == \"__main__\":`. The workers must also be able to import the generator's module.")


def _pool_results(task: ToyTask, pickled: bytes, units: list[ToyUnit], n_processes: int,
                  max_losses: int) -> Iterator[dict[str, Any]]:
    """Rows of the units from our own spawned process pool. When a worker dies, the pool is
    replaced and the units that were in flight run again one at a time, each alone in the pool: a
    unit whose worker dies while it runs alone is lost (counted; a unit of several toys that is lost
    more than max_losses times is split into single toys, and a single toy lost more than
    max_losses times stops the campaign with ExecutorError). `pickled`: the task as _pickled gave
    it, written once to a temporary file that the workers read (_initialise_worker)."""
    with tempfile.TemporaryDirectory(prefix="nplm-campaign-") as folder:
        task_path = os.path.join(folder, "task.pickle")
        with open(task_path, "wb") as stream:
            stream.write(pickled)
        yield from _pool_rows(task, task_path, units, n_processes, max_losses)


def _pool_rows(task: ToyTask, task_path: str, units: list[ToyUnit], n_processes: int,
               max_losses: int) -> Iterator[dict[str, Any]]:
    """_pool_results' loop, the task pickled at task_path for the workers (_initialise_worker)."""
    context = get_context("spawn")
    cuda = _uses_cuda(task.test)  # the workers run here: an unavailable device is refused now, not in each worker
    started = context.Value("i", 0)

    def new_pool() -> ProcessPoolExecutor:
        started.value = 0
        return ProcessPoolExecutor(n_processes, mp_context=context, initializer=_initialise_worker,
                                   initargs=(task_path, os.getpid(), context.Value("i", 0), cuda, started))

    queue, suspects, losses = deque(units), deque(), {}
    in_flight: dict[Future, ToyUnit] = {}
    alone = None  # the suspect unit running alone in the pool, if any
    pool = new_pool()
    try:
        while queue or suspects or in_flight:
            broken = False
            try:
                if alone is None and suspects and not in_flight:
                    future = pool.submit(_run_in_worker, suspects[0])  # taken off its queue once submitted
                    in_flight[future] = alone = suspects.popleft()
                while alone is None and not suspects and queue and len(in_flight) < IN_FLIGHT_PER_WORKER * n_processes:
                    future = pool.submit(_run_in_worker, queue[0])
                    in_flight[future] = queue.popleft()
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            except BrokenProcessPool:  # a worker died while we submitted
                broken, finished = True, set()
            for future in finished:
                try:
                    rows = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                alone = None if in_flight.pop(future) == alone else alone
                yield from rows
            if not broken:
                continue
            if started.value == 0:
                raise ExecutorError(START_FAILURE)
            lost = list(in_flight.values())
            if alone is not None:  # it ran alone in its worker, and the worker died
                losses[alone] = losses.get(alone, 0) + 1
                logger.warning("%s: lost with its pool worker, alone in it (%d of at most %d times)", _toys(alone),
                               losses[alone], max_losses)
                if losses[alone] <= max_losses:
                    suspects.appendleft(alone)
                elif len(alone.keep) > 1:
                    suspects.extendleft(ToyUnit((toy,), (toy,)) for toy in reversed(alone.keep))
                else:
                    raise ExecutorError(
                        f"{_toys(alone)} was running alone in a fresh worker process each of the {losses[alone]} "
                        "times the worker died: the toy kills its worker (a crash in compiled code, or the memory "
                        "limit: see `dmesg`), or something else kills the pool's processes. The finished toys are "
                        "stored; run this toy serially to see what happens.")
                alone = None
            else:
                suspects.extend(lost)
            in_flight.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _held(task: ToyTask) -> ToyTask:
    return task


def _external_results(executor: Any, task: ToyTask, units: list[ToyUnit], max_losses: int) -> Iterator[dict[str, Any]]:
    """Rows from a dask Client or any concurrent.futures.Executor. On dask the task goes into the
    graph once, as the result of a task every unit depends on: unlike scattered data, dask computes
    it again when every worker holding it is gone (and it is submitted again if it was cancelled).
    Other executors receive it with each unit. A lost unit is submitted again (_count_loss)."""
    client = executor if _is_dask_client(executor) else None
    held = [task if client is None else client.submit(_held, task, pure=False)]
    if client is not None:
        executor = client.get_executor(pure=False)

    def submit(unit: ToyUnit) -> Future:
        if client is not None and held[0].status in ("cancelled", "error", "lost"):  # killed or forgotten
            held[0] = client.submit(_held, task, pure=False)
        try:
            return executor.submit(run_toy_unit, held[0], unit)
        except Exception as error:  # noqa: BLE001 - a broken or closed executor: name it
            raise ExecutorError(f"the executor takes no more toys ({type(error).__name__}: {error}); a concurrent."
                                "futures pool does not replace dead workers: use executor='local' or a number of "
                                "processes (our pool does), or a dask cluster.") from error

    queue, losses = deque(units), {}
    in_flight: dict[Future, ToyUnit] = {}
    while queue or in_flight:
        while queue and len(in_flight) < EXTERNAL_IN_FLIGHT:
            future = submit(queue[0])
            in_flight[future] = queue.popleft()
        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        lost = []
        for future in finished:
            unit = in_flight.pop(future)
            try:
                rows = future.result()
            except ConfigurationError:
                raise
            except Exception as error:  # noqa: BLE001 - lost with its worker (submitted again), or ExecutorError
                _count_loss(losses, unit, error, max_losses)
                queue.appendleft(unit)
                lost.append((unit, error))
                continue
            yield from rows
        if lost:
            logger.warning("%d unit(s) of toys (%d toys) lost with their workers (%s): submitted again", len(lost),
                           sum(len(unit.keep) for unit, _ in lost), _error_text(lost[-1][1]))


def _dask_results(setting: DaskScheduler | BatchJobs, task: ToyTask, units: list[ToyUnit],
                  max_losses: int) -> Iterator[dict[str, Any]]:
    """Rows from a running scheduler or from batch jobs (adapt keeps `jobs` of them running), with
    a Client that lives as long as the campaign."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigurationError("dask executors need dask.distributed: pip install 'nplm-kernel[cluster]'.") from None
    if isinstance(setting, DaskScheduler):
        with Client(setting.address) as client:
            yield from _external_results(client, task, units, max_losses)
        return
    with setting.cluster() as cluster:
        cluster.adapt(minimum_jobs=setting.jobs, maximum_jobs=max(setting.jobs, setting.max_jobs or setting.jobs))
        with Client(cluster) as client, _VanishedJobs(cluster, setting.system):
            logger.info("%s jobs: dashboard %s", setting.system, client.dashboard_link)
            yield from _external_results(client, task, units, max_losses)


class _VanishedJobs:
    """While a campaign runs on batch jobs: every VANISHED_CHECK_SECONDS, a job that has no
    connected worker and that the batch system no longer holds, for longer than dask's
    lost-worker-timeout (after which dask itself replaces a job whose worker it saw leave), ended
    before its worker started (cancelled while pending or starting): it is forgotten, so that adapt
    submits a replacement. dask-jobqueue would wait for it forever. SLURM only (squeue): on the
    other systems such a job is not replaced."""

    def __init__(self, cluster: Any, system: str):
        self.cluster, self.system = cluster, system
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="nplm-vanished-jobs")
        self.missing_since: dict[tuple[str, str], float] = {}

    def __enter__(self) -> _VanishedJobs:
        if self.system in QUEUED_JOBS_COMMANDS:
            self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def _missing(self) -> set[tuple[str, str]]:
        """(name, job id) of the jobs without a connected worker that the batch system does not hold."""
        connected = [str(worker["name"]) for worker in self.cluster.scheduler_info["workers"].values()]
        waiting = {(name, str(job.job_id)) for name, job in list(self.cluster.workers.items())
                   if job.job_id and not any(worker == name or worker.startswith(f"{name}-") for worker in connected)}
        if not waiting:
            return set()
        listed = subprocess.run(QUEUED_JOBS_COMMANDS[self.system], capture_output=True, text=True, timeout=30)
        if listed.returncode != 0:
            raise RuntimeError(listed.stderr.strip())
        queued = set(listed.stdout.split())
        return {(name, job_id) for name, job_id in waiting if job_id not in queued}

    def _watch(self) -> None:
        import dask

        grace = dask.utils.parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")) + \
            VANISHED_CHECK_SECONDS
        while not self.done.wait(VANISHED_CHECK_SECONDS):
            try:
                missing = self._missing()
            except (OSError, subprocess.SubprocessError, KeyError, AttributeError, RuntimeError) as error:
                logger.debug("checking the batch jobs failed: %s", error)
                continue
            now = time.monotonic()
            self.missing_since = {job: self.missing_since.get(job, now) for job in missing}
            vanished = [job for job, since in self.missing_since.items() if now - since > grace]
            if vanished:
                logger.warning("batch job(s) %s ended before their workers started: submitting replacements",
                               ", ".join(job_id for _, job_id in vanished))
                self.cluster.loop.add_callback(self._forget, vanished)
                for job in vanished:
                    self.missing_since.pop(job)

    def _forget(self, jobs: list[tuple[str, str]]) -> None:
        """(On the cluster's event loop) forget the jobs and let the cluster start their specs again,
        as dask's SpecCluster does with a worker it lost."""
        for name, job_id in jobs:
            if name in self.cluster.workers and str(self.cluster.workers[name].job_id) == job_id:
                del self.cluster.workers[name]
        self.cluster._correct_state()


def refuse_start_in_worker() -> None:
    """ConfigurationError when a campaign starts while a spawned process imports the main script
    (a script without `if __name__ == "__main__":` runs its campaign again in every worker)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigurationError("a campaign was started while a worker process imported the script that started "
                                 "it: start the campaign under `if __name__ == \"__main__\":`.")


def results(executor: Any, task: ToyTask, units: list[ToyUnit], max_losses: int = MAX_LOSSES) -> Iterator[dict[str, Any]]:
    """The rows of the kept toys of `units` as they finish, on `executor` (resolve_executor's value)."""
    if executor is None or not units:
        for unit in units:
            yield from run_toy_unit(task, unit)
        return
    pickled = _pickled(task)
    n_processes = _process_count(executor, task.test)
    if n_processes is not None:
        yield from _pool_results(task, pickled, units, n_processes, max_losses)
    elif isinstance(executor, (DaskScheduler, BatchJobs)):
        yield from _dask_results(executor, task, units, max_losses)
    else:
        yield from _external_results(executor, task, units, max_losses)
