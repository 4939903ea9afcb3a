"""Campaigns on a real SLURM (.ci/slurm.sh starts a one-node SLURM in CI): dask workers in SLURM
jobs through dask-jobqueue, and a job array of shards merged afterwards, with jobs cancelled
mid-run (one, then all) and resumed. Nothing may be lost or counted twice, and t must equal a serial
run's bit for bit."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import SlowGenerator, small_campaign_inputs

from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.cli import main
from nplm_kernel.store import StoreError, merge_stores, read_store
from nplm_kernel.toys import BatchJobs, run_toys

ROOT = Path(__file__).resolve().parents[1]


def _unavailable() -> str | None:
    """Why no SLURM can run the tests here (None when one can)."""
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        return "no SLURM on this machine (.ci/slurm.sh installs and starts a one-node SLURM in CI)"
    if "SLURM_CONF" not in os.environ:
        return "SLURM_CONF is not set: no SLURM was started for the tests (source .ci/slurm.sh; slurm_start)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo does not answer ({error})"
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"no SLURM node is up (sinfo: {states})"
    return None


REASON = _unavailable()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


def _jobs(state: str = "PD,R,CG") -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", state, "-o", "%i"], capture_output=True, text=True, timeout=10).stdout
    return out.split()


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (squeue: {_jobs()})")
        time.sleep(0.1)


def _toy_lines(store: Path) -> list[int]:
    return [row["toy"] for row in map(json.loads, store.read_text().splitlines()) if row["record"] == "toy"]


def test_a_campaign_on_slurm_jobs_loses_nothing_when_jobs_are_cancelled_and_resumes(tmp_path, monkeypatch):
    """Two SLURM jobs kept by adapt; one job cancelled, then all of them (as a common walltime does):
    the toys in flight are computed again on the replacement jobs; the store then resumes to more
    toys."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))  # the workers' imports
    test, x_ref, w_ref = small_campaign_inputs()
    jobs = BatchJobs(system="slurm", jobs=2, cores=1, memory="1GB", walltime="00:10:00", interface="lo",
                     log_directory=str(tmp_path / "logs"))
    cancelled: list[list[str]] = []

    def cancel_one_then_all() -> None:
        try:
            _wait(lambda: len(_jobs("R")) >= 2, 60, "two running jobs")
            time.sleep(2)
            cancelled.append(_jobs("R")[:1])
            subprocess.run(["scancel", *cancelled[-1]], check=True)
            time.sleep(2)
            cancelled.append(_jobs())
            subprocess.run(["scancel", *cancelled[-1]], check=True)
        except AssertionError:
            pass  # the campaign ended first: the assertion below says so

    canceller = threading.Thread(target=cancel_one_then_all, daemon=True)
    canceller.start()
    store = tmp_path / "slurm.jsonl"
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        first = run_toys(test, SlowGenerator(0.05), x_ref, w_ref, n_toys=160, seed=6, executor=jobs, store=store,
                         progress=False, generator_name="slow")
    canceller.join()
    assert len(cancelled) == 2 and len(cancelled[1]) >= 1, f"the jobs were not cancelled mid-run: {cancelled}"
    resumed = run_toys(test, SlowGenerator(0.0), x_ref, w_ref, n_toys=170, seed=6, executor=None, store=store,
                       progress=False, generator_name="slow")
    assert first.n_failed == 0 and resumed.n_failed == 0
    assert sorted(_toy_lines(store)) == list(range(170))  # nothing lost, nothing written twice
    serial = run_toys(test, SlowGenerator(0.0), x_ref, w_ref, n_toys=170, seed=6, executor=None, progress=False,
                      generator_name="slow")
    assert np.array_equal(resumed.t, serial.t)


def test_jobs_cancelled_before_their_workers_start_are_replaced(tmp_path, monkeypatch, caplog):
    """dask-jobqueue replaces only jobs whose workers it has seen; the campaign also replaces jobs that
    the batch system no longer holds before their workers started (cancelled while pending or
    starting)."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    test, x_ref, w_ref = small_campaign_inputs()
    jobs = BatchJobs(system="slurm", jobs=2, cores=1, memory="1GB", walltime="00:10:00", interface="lo",
                     log_directory=str(tmp_path / "logs"))
    cancelled: list[str] = []

    def cancel_at_start() -> None:
        _wait(lambda: len(_jobs()) >= 2, 60, "two jobs")
        cancelled.extend(_jobs())
        subprocess.run(["scancel", *cancelled], check=True)

    canceller = threading.Thread(target=cancel_at_start, daemon=True)
    canceller.start()
    results = []

    def campaign() -> None:
        results.append(run_toys(test, SlowGenerator(0.0), x_ref, w_ref, n_toys=6, seed=6, executor=jobs,
                                progress=False, generator_name="slow"))

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        runner = threading.Thread(target=campaign, daemon=True)  # without the replacement it would wait forever
        runner.start()
        runner.join(timeout=180)
    canceller.join()
    assert results, "the campaign waited for jobs that had ended"
    assert len(cancelled) == 2 and results[0].n_failed == 0 and len(results[0].t) == 6
    assert "ended before their workers started: submitting replacements" in caplog.text


def test_a_job_array_of_shards_with_cancelled_tasks_resumes_and_merges_into_the_serial_run(tmp_path, capsys):
    """`nplm toys --shard $SLURM_ARRAY_TASK_ID/2` in a job array; one task cancelled mid-run, then the
    whole array; the array submitted again resumes each shard, and `nplm store merge` proves that
    every toy is there once, with the t of one serial run (batched toys included)."""
    x_ref, _ = Exponential1D(n_expected=100.0, n_reference=4000).reference(np.random.default_rng(3))
    np.save(tmp_path / "reference.npy", x_ref)
    common = ["--reference", str(tmp_path / "reference.npy"), "--expected-yield", "100", "--pool-fraction", "0.5",
              "--n-centers", "20", "--reuse-reference", "true", "--batch-size", "16", "--n-toys", "200", "--seed", "3",
              "--executor", "serial", "--no-progress"]
    script = tmp_path / "shard.sh"
    script.write_text(f"#!/bin/bash\nexec {Path(sys.executable).with_name('nplm')} toys {' '.join(common)} "
                      f"--shard $SLURM_ARRAY_TASK_ID/2 --store {tmp_path}/shard-$SLURM_ARRAY_TASK_ID.jsonl\n")
    submit = ["sbatch", "--parsable", "--array=0-1", "-c", "1", "-o", str(tmp_path / "array-%a.out"), str(script)]
    array = subprocess.run(submit, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    _wait(lambda: (tmp_path / "shard-1.jsonl").exists(), 120, "shard 1 to start")
    subprocess.run(["scancel", f"{array}_1"], check=True)  # one task
    _wait(lambda: (tmp_path / "shard-0.jsonl").exists(), 120, "shard 0 to start")
    subprocess.run(["scancel", array], check=True)  # all of them
    _wait(lambda: not [job for job in _jobs() if job.startswith(array)], 60, "the array to end")
    partial = sorted(tmp_path.glob("shard-*.jsonl"))
    with pytest.raises(StoreError, match="the shards do not hold every toy of the campaign"):
        merge_stores(tmp_path / "merged.jsonl", partial)
    subprocess.run(["sbatch", "--wait", *submit[2:]], capture_output=True, text=True, check=True, timeout=300)
    for index in range(2):
        toys = _toy_lines(tmp_path / f"shard-{index}.jsonl")
        assert len(toys) == len(set(toys)), f"shard {index} wrote a toy twice"
    assert main(["store", "merge", str(tmp_path / "merged.jsonl"), str(tmp_path / "shard-*.jsonl")]) == 0
    assert "complete:   every toy of the campaign, each once" in capsys.readouterr().out
    assert main(["toys", *common, "--store", str(tmp_path / "serial.jsonl")]) == 0
    merged, serial = read_store(tmp_path / "merged.jsonl").rows, read_store(tmp_path / "serial.jsonl").rows
    assert [row["toy"] for row in merged] == list(range(200))
    assert [row["t"] for row in merged] == [row["t"] for row in serial]
