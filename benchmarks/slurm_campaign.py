"""A null campaign through SLURM with jobs cancelled every so often, against the local process pool
and a serial run of the same toys, in one run.

The 1D benchmark (N(R) = 2000, N_R = 200,000), KernelNPLM(n_centers=M, reuse_reference=True),
toys fitted in batches (the default batch size). The campaign runs three times: serially (the
reference t), on the local pool (--processes) and on --jobs SLURM jobs of one core each through
dask-jobqueue (executor BatchJobs, adapt keeps --jobs jobs). During the SLURM run a thread cancels
one running job every --cancel-every seconds, and every third time all of them (as a walltime that
ends jobs submitted together does). The report: the store's rows, toys lost (indices without a row)
and duplicated (toy rows written twice), whether every t equals the serial t bit for bit, and toys/s
of SLURM against the pool.

Needs a SLURM (SLURM_CONF set; `source .ci/slurm.sh; slurm_start` makes a one-node one) and
dask-jobqueue (pip install 'nplm-kernel[cluster]'):

    python benchmarks/slurm_campaign.py --n-toys 10000 --jobs 2 --processes 2 --interface lo
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dask
import numpy as np

from nplm_kernel import KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.toys import BatchJobs


def running_jobs() -> list[str]:
    return subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout.split()


def cancel_periodically(every: float, done: threading.Event, log: list[str]) -> None:
    """Cancel one running job every `every` seconds (all of them every third time) until `done`."""
    start = time.monotonic()
    while not done.wait(every):
        jobs = running_jobs()
        if not jobs:
            continue
        chosen = jobs if len(log) % 3 == 2 else [random.choice(jobs)]
        subprocess.run(["scancel", *chosen], check=False)
        log.append(f"{time.monotonic() - start:6.1f} s: cancelled {', '.join(chosen)} of {len(jobs)} running")


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-toys", type=int, default=10_000)
    parser.add_argument("--n-centers", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs (one core, one worker each)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the local pool")
    parser.add_argument("--cancel-every", type=float, default=20.0, help="seconds between cancellations")
    parser.add_argument("--lost-worker-timeout", default="5s", help="dask's wait before replacing a lost job")
    parser.add_argument("--walltime", default="01:00:00")
    parser.add_argument("--queue", help="SLURM partition")
    parser.add_argument("--interface", help="network interface of the scheduler and workers (lo on one node)")
    arguments = parser.parse_args()

    bench = Exponential1D()
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    test = NPLMTest(KernelNPLM(n_centers=arguments.n_centers, reuse_reference=True), width_quantiles=None)
    campaign = dict(test=test, generator=bench.data, x_ref=x_ref, w_ref=w_ref, n_toys=arguments.n_toys, seed=11,
                    progress=False)
    serial, serial_time = timed(lambda: run_toys(**campaign, executor=None))
    pooled, pool_time = timed(lambda: run_toys(**campaign, executor=arguments.processes))
    with tempfile.TemporaryDirectory() as folder:
        jobs = BatchJobs(system="slurm", jobs=arguments.jobs, cores=1, memory="2GB", walltime=arguments.walltime,
                         queue=arguments.queue, interface=arguments.interface, log_directory=folder)
        store = Path(folder) / "slurm.jsonl"
        done, log = threading.Event(), []
        canceller = threading.Thread(target=cancel_periodically, args=(arguments.cancel_every, done, log))
        canceller.start()
        try:
            with dask.config.set({"distributed.deploy.lost-worker-timeout": arguments.lost_worker_timeout}):
                clustered, slurm_time = timed(lambda: run_toys(**campaign, executor=jobs, store=store))
        finally:
            done.set()
            canceller.join()
        lines = [json.loads(line) for line in store.read_text().splitlines()]
    toys = [row["toy"] for row in lines if row["record"] == "toy"]
    lost = sorted(set(range(arguments.n_toys)) - set(toys))
    print("\n".join(log))
    print(f"\n{arguments.n_toys} toys of the 1D benchmark, KernelNPLM(n_centers={arguments.n_centers}, "
          f"reuse_reference=True), batches of {lines[0]['execution']['batch_size']}; {len(log)} cancellations\n")
    print("| run | toys/s | ratio to the pool | failed | t equal to serial (bit for bit) |")
    print("|---|---|---|---|---|")
    for name, result, seconds in [("serial", serial, serial_time), (f"local pool, {arguments.processes} processes",
                                                                      pooled, pool_time),
                                  (f"SLURM, {arguments.jobs} jobs, cancelled", clustered, slurm_time)]:
        print(f"| {name} | {arguments.n_toys / seconds:.1f} | {pool_time / seconds:.2f} | {result.n_failed} | "
              f"{np.array_equal(result.t, serial.t)} |")
    print(f"\nSLURM store: {len(toys)} toy rows, {len(lost)} lost, {len(toys) - len(set(toys))} duplicated")


if __name__ == "__main__":
    main()
