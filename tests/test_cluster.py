"""Campaigns on clusters: the executor settings (dask, batch systems through dask-jobqueue), toys
lost with their workers, shards of one campaign and their merge, and retried failures."""

import json
import os
import shutil
import threading
import time
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest
from campaign_helpers import BENCHMARK, RaisingGenerator, SlowGenerator, small_campaign_inputs

from nplm_kernel import ConfigurationError, FitError, InputError, KernelNPLM
from nplm_kernel.app.config import Toys
from nplm_kernel.cli import main
from nplm_kernel.inference import NPLMTest
from nplm_kernel.store import (
    CampaignMismatchError,
    StoreConflictError,
    StoreError,
    check_store,
    merge_stores,
    read_store,
    read_stores,
)
from nplm_kernel.toys import BatchJobs, CampaignResult, DaskScheduler, ExecutorError, resolve_executor, run_toys


@pytest.fixture(scope="module")
def inputs():
    return small_campaign_inputs()


@pytest.fixture(scope="module")
def batched(inputs):
    _, x_ref, w_ref = inputs
    return NPLMTest(KernelNPLM(n_centers=30, reuse_reference=True), width_quantiles=None), x_ref, w_ref


def test_executor_settings_for_a_scheduler_and_batch_systems():
    assert resolve_executor("dask:tcp://10.0.0.1:8786") == DaskScheduler("tcp://10.0.0.1:8786")
    assert resolve_executor({"kind": "dask", "address": "tcp://h:1"}) == DaskScheduler("tcp://h:1")
    jobs = resolve_executor("slurm:jobs=4,cores=2,memory=8GB,walltime=02:00:00,queue=short,account=phys")
    assert jobs == BatchJobs(system="slurm", jobs=4, cores=2, memory="8GB", walltime="02:00:00", queue="short",
                             account="phys")
    assert resolve_executor(jobs) is jobs and resolve_executor("htcondor").system == "htcondor"
    assert resolve_executor({"kind": "pbs", "jobs": 3, "walltime": "1-00:00:00"}).jobs == 3
    with pytest.raises(ConfigurationError, match="executor 'slurm': job: unknown key"):
        resolve_executor("slurm:job=4")
    with pytest.raises(ConfigurationError, match=r"walltime must be \[D-\]HH:MM:SS, got '90'"):
        resolve_executor({"kind": "slurm", "walltime": "90"})
    with pytest.raises(ConfigurationError, match="jobs: Input should be greater than or equal to 1"):
        resolve_executor("slurm:jobs=0")
    with pytest.raises(ConfigurationError, match="is not KEY=VALUE"):
        resolve_executor("slurm:4")
    with pytest.raises(ConfigurationError, match="'dask:ADDRESS', a batch system"):
        resolve_executor("condor")
    assert Toys(n_toys=3, pool_fraction=0.5, executor={"kind": "slurm", "jobs": 2}).executor["jobs"] == 2
    with pytest.raises(ValueError, match="memory: Input should be a valid string"):
        Toys(n_toys=3, pool_fraction=0.5, executor={"kind": "slurm", "memory": 4})


@pytest.mark.parametrize("text, expected", [
    ("slurm:jobs=2,cores=2,memory=4GB,walltime=01:00:00,queue=short,account=phys",
     ["#SBATCH -p short", "#SBATCH -A phys", "#SBATCH --cpus-per-task=2", "#SBATCH -t 01:00:00", "--nworkers 2",
      "--nthreads 1", "--lifetime 3240s", "--lifetime-stagger 180s"]),
    ("htcondor:memory=2GB,walltime=02:00:00", ["+MaxRuntime = 7200", "MY.DaskWorkerMemory = 2000000000",
                                               "--lifetime 6480s", "--nthreads 1"]),
    ("pbs:walltime=00:30:00,queue=batch", ["#PBS -q batch", "#PBS -l walltime=00:30:00", "--lifetime 1620s"]),
])
def test_batch_job_scripts_keep_one_thread_per_toy_and_retire_workers_before_the_walltime(text, expected):
    pytest.importorskip("dask_jobqueue")
    with resolve_executor(text).cluster() as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.rsplit(":", 1)[1] != "8786"  # a free port, like the dashboard's
    for line in expected:
        assert line in script, (line, script)


def test_a_local_pool_in_a_batch_job_uses_the_cores_of_the_job(monkeypatch):
    from nplm_kernel.toys.executors import available_cores

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cores() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert 1 <= available_cores() <= os.cpu_count()


def test_htcondor_directives_become_submit_lines():
    pytest.importorskip("dask_jobqueue")
    spec = BatchJobs(system="htcondor", directives=('+JobFlavour = "workday"',))
    with spec.cluster() as cluster:
        assert '+JobFlavour = "workday"' in cluster.job_script()


class LosingExecutor(Executor):
    """Threads that lose each unit's first `losses` submissions (a CancelledError, as a cancelled batch
    job gives), or fail them with `error` (an error of the executor itself)."""

    def __init__(self, losses: int = 1, error: Exception | None = None):
        self.threads = ThreadPoolExecutor(2)
        self.losses, self.error, self.seen = losses, error, {}

    def submit(self, function, *arguments):
        unit = arguments[-1]
        self.seen[unit] = self.seen.get(unit, 0) + 1
        if self.seen[unit] <= self.losses or self.error is not None:
            future = Future()
            future.set_exception(self.error or CancelledError())
            return future
        return self.threads.submit(function, *arguments)

    def shutdown(self, wait=True, **_):
        self.threads.shutdown(wait)


def test_toys_lost_with_their_worker_are_submitted_again_not_recorded_as_failed(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    serial = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=2, executor=None, progress=False)
    losing = LosingExecutor(losses=2)
    result = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=2, executor=losing, progress=False,
                      store=tmp_path / "lost.jsonl", max_losses=2)
    assert result.n_failed == 0 and np.array_equal(result.t, serial.t)
    assert set(losing.seen.values()) == {3}  # each unit lost twice, run the third time
    assert len(read_store(tmp_path / "lost.jsonl").rows) == 6
    with pytest.raises(ExecutorError, match=r"toy \d: lost with the worker 2 times \(last: CancelledError\), more "
                                            "than max_losses = 1"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=2, executor=LosingExecutor(losses=5),
                 progress=False, max_losses=1)
    with pytest.raises(ExecutorError, match="could not run toy .*ModuleNotFoundError: no module 'mine'"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=2, progress=False,
                 executor=LosingExecutor(error=ModuleNotFoundError("no module 'mine'")))
    broken = ThreadPoolExecutor(1)
    broken.shutdown()
    with pytest.raises(ExecutorError, match="the executor takes no more toys"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=2, progress=False, executor=broken)


@pytest.mark.slow
def test_a_dask_cluster_restarted_mid_campaign_loses_no_toy_and_counts_none_twice(inputs, tmp_path):
    """client.restart() cancels every task, the one holding the campaign's task included (as the loss of
    every worker at once does to scattered data): the campaign submits them again and completes."""
    distributed = pytest.importorskip("distributed")
    test, x_ref, w_ref = inputs
    store = tmp_path / "restarted.jsonl"
    serial = run_toys(test, SlowGenerator(0.0), x_ref, w_ref, n_toys=16, seed=3, executor=None, progress=False,
                      generator_name="slow")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") \
            as cluster, distributed.Client(cluster) as client:
        def restart_once_toys_are_stored():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not store.exists() or store.stat().st_size < 2000):
                time.sleep(0.05)
            client.restart()

        restarter = threading.Thread(target=restart_once_toys_are_stored)
        restarter.start()
        result = run_toys(test, SlowGenerator(0.15), x_ref, w_ref, n_toys=16, seed=3, executor=client, progress=False,
                          generator_name="slow", store=store)
        restarter.join()
    rows = [json.loads(line) for line in store.read_text().splitlines()[1:]]
    assert sorted(row["toy"] for row in rows if row["record"] == "toy") == list(range(16))
    assert result.n_failed == 0 and np.array_equal(result.t, serial.t)


def test_shards_of_one_campaign_merge_into_the_single_run(batched, tmp_path, capsys):
    """Shards own whole blocks of batch_size toys: the same batches, hence the same t bit for bit, as
    one run; merge proves that every toy is there once."""
    test, x_ref, w_ref = batched
    whole = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=22, seed=5, executor=None, progress=False,
                     batch_size=4)
    shards = [tmp_path / f"shard-{index}.jsonl" for index in range(3)]
    for index in (0, 2):
        part = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=22, seed=5, executor=None, progress=False,
                        batch_size=4, shard=f"{index}/3", store=shards[index])
        assert [row["toy"] for row in part.rows] == [toy for toy in range(22) if (toy // 4) % 3 == index]
    with pytest.raises(StoreError, match=r"shard 1/3: no store given \(8 toys\)"):
        merge_stores(tmp_path / "merged.jsonl", [shards[0], shards[2]])
    foreign = _copy_header_only(shards[0], 1, tmp_path)  # a store of shard 1/3
    with pytest.raises(CampaignMismatchError, match=r"holds shard 1/3 \(blocks of 4 toys\), this run is shard 2/3"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=22, seed=5, executor=None, progress=False, batch_size=4,
                 shard=(2, 3), store=foreign)
    foreign.unlink()
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=22, seed=5, executor=None, progress=False, batch_size=4,
             shard="1/3", store=shards[1])
    lines = shards[1].read_text().splitlines()
    shards[1].write_text("\n".join(lines[:-2]) + "\n")  # the last two toys of shard 1 lost
    with pytest.raises(StoreError, match=r"shard 1/3: 2 toy\(s\) missing \(18, 19\)"):
        merge_stores(tmp_path / "merged.jsonl", str(tmp_path / "shard-*.jsonl"))
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=22, seed=5, executor=None, progress=False, batch_size=4,
             shard="1/3", store=shards[1])  # the shard resumes: its partial block is fitted whole again
    assert main(["store", "merge", str(tmp_path / "merged.jsonl"), str(tmp_path / "shard-*.jsonl")]) == 0
    assert "complete:   every toy of the campaign, each once" in capsys.readouterr().out
    merged = CampaignResult.from_store(tmp_path / "merged.jsonl", test, x_ref, w_ref)
    assert [row["toy"] for row in merged.rows] == list(range(22)) and np.array_equal(merged.t, whole.t)
    together = CampaignResult.from_store(str(tmp_path / "shard-*.jsonl"))
    assert np.array_equal(together.t, whole.t)
    assert main(["calibrate", "--store", *map(str, shards), "--t-observed", "30"]) == 0
    assert "null:      22 toys" in capsys.readouterr().out
    copy = tmp_path / "copy.jsonl"
    shutil.copy(shards[0], copy)
    with pytest.raises(StoreError, match="shard 0/3 is given twice"):
        merge_stores(tmp_path / "again.jsonl", [shards[0], copy, shards[1]])


def _copy_header_only(store, index, folder):
    """A new store holding only the header of `store`, as shard `index`."""
    header = json.loads(store.read_text().splitlines()[0])
    header["shard"]["index"] = index
    copy = folder / f"header-{index}.jsonl"
    copy.write_text(json.dumps(header) + "\n")
    return copy


def test_stores_of_different_campaigns_are_not_read_or_merged_together(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=1, executor=None, progress=False, store=tmp_path / "a")
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=2, executor=None, progress=False, store=tmp_path / "b")
    with pytest.raises(CampaignMismatchError, match="hold toys of different campaigns; what differs:\n  seed"):
        read_stores([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(StoreError, match="is not a shard"):
        merge_stores(tmp_path / "out", [tmp_path / "a"])
    copy = tmp_path / "a2"
    shutil.copy(tmp_path / "a", copy)
    assert len(read_stores([tmp_path / "a", copy]).rows) == 3  # the same toys in two stores count once
    lines = copy.read_text().splitlines()
    row = json.loads(lines[-1])
    row["t"] += 1.0
    copy.write_text("\n".join(lines[:-1] + [json.dumps(row)]) + "\n")
    with pytest.raises(StoreConflictError, match=f"toy {row['toy']} has different results"):
        read_stores([tmp_path / "a", copy])
    with pytest.raises(InputError, match="no toy store matches this pattern"):
        read_stores(str(tmp_path / "none-*.jsonl"))


def test_failed_toys_are_retried_on_request_and_the_failure_limit_names_its_cause(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "failing.jsonl"
    first = run_toys(test, RaisingGenerator(0.4), x_ref, w_ref, n_toys=8, seed=3, executor=None, store=store,
                     progress=False, max_failure_fraction=1.0, generator_name="background")
    failed = {row["toy"] for row in first.rows if row["status"] != "ok"}
    assert 1 <= len(failed) < 8
    with pytest.raises(FitError, match=rf"{len(failed)} of the 10 toys stored in .* failed, .* nothing was run\. "
                                       "Retry them with retry_failed=True"):
        run_toys(test, RaisingGenerator(0.4), x_ref, w_ref, n_toys=10, seed=3, executor=None, store=store,
                 progress=False, max_failure_fraction=0.05, generator_name="background")
    again = run_toys(test, RaisingGenerator(0.4), x_ref, w_ref, n_toys=8, seed=3, executor=None, store=store,
                     progress=False, generator_name="background")
    assert again.n_failed == len(failed)  # a resume keeps failed rows unless asked
    retried = run_toys(test, RaisingGenerator(0.0), x_ref, w_ref, n_toys=8, seed=3, executor=None, store=store,
                       progress=False, generator_name="background", retry_failed=True)
    assert retried.n_failed == 0 and all(retried.rows[toy]["retry"] for toy in failed)
    assert read_store(store).rows == retried.rows and check_store(store).retried == len(failed)
    assert np.array_equal(retried.t, run_toys(test, RaisingGenerator(0.0), x_ref, w_ref, n_toys=8, seed=3,
                                              executor=None, progress=False).t)
    with pytest.raises(FitError, match=r"last: toy \d+: failed: ValueError: this generator cannot draw"):
        run_toys(test, RaisingGenerator(0.4), x_ref, w_ref, n_toys=8, seed=4, executor=None, progress=False,
                 max_failure_fraction=0.0)
