"""Importable (picklable) toy generators for the campaign tests and their subprocesses."""

import os
import sys
import time
from pathlib import Path

import numpy as np

from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.inference import NPLMTest
from nplm_kernel.toys import run_toys

BENCHMARK = Exponential1D(n_expected=100.0, n_reference=2000)


def small_campaign_inputs():
    x_ref, w_ref = BENCHMARK.reference(np.random.default_rng(7))
    return NPLMTest(KernelNPLM(n_centers=30), width_quantiles=None), x_ref, w_ref


class SlowGenerator:
    """Background toys drawn slowly, so that a campaign can be killed part-way."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        time.sleep(self.seconds)
        return BENCHMARK.data(rng)


class PoisonedGenerator:
    """Returns non-finite data for toys whose first uniform draw falls below `fraction`."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        x = BENCHMARK.data(rng)
        if rng.uniform() < self.fraction:
            x[0, 0] = np.nan
        return x


class RaisingGenerator:
    """Raises ValueError for toys whose first uniform draw falls below `fraction`."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if rng.uniform() < self.fraction:
            raise ValueError("this generator cannot draw that toy")
        return BENCHMARK.data(rng)


class DyingGenerator:
    """Kills its own (worker) process with os._exit for toys whose first uniform draw falls below
    `fraction`: a worker that dies, as a segfault or the OOM killer would end it."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if rng.uniform() < self.fraction:
            os._exit(3)
        return BENCHMARK.data(rng)


if __name__ == "__main__":
    # python campaign_helpers.py STORE N_TOYS [EXECUTOR]: a slow campaign to kill or to race
    test, x_ref, w_ref = small_campaign_inputs()
    executor = None if len(sys.argv) < 4 else int(sys.argv[3])
    run_toys(test, SlowGenerator(0.3), x_ref, w_ref, n_toys=int(sys.argv[2]), seed=5, executor=executor,
             store=Path(sys.argv[1]), progress=False, generator_name="slow background")
