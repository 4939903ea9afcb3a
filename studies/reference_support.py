"""How t grows when one data event lies beyond the reference sample, and what the fit says about it.

1D benchmark (N(R) = 2000, N_R = 200,000), the kernel at sigma = 2.4 (standardised units) with
M = 3000 centres drawn: to each of a few null toys one data event is added at the largest
reference event plus a distance (in x units), and the fit is redone at lambda = 1e-6 (the default)
and 1e-10. The table gives the median increase of t over the toy without that event, the largest
fitted f at a data event, and how many of the fits warn that the reference sample cannot support
the event (contract.finish_fit: f above log(1000)). docs/statistics.md quotes the table.

    python studies/reference_support.py --toys 5
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from nplm_kernel import KernelNPLM, ReferenceSupportWarning
from nplm_kernel.benchmarks import Exponential1D

DISTANCES = (0.0, 0.1, 0.5, 1.0, 2.0, 4.0)
PENALTIES = (1e-6, 1e-10)


def fit(x_data: np.ndarray, x_ref: np.ndarray, w_ref: np.ndarray, penalty: float) -> tuple[float, float, bool]:
    """(t, largest f at a data event, whether the fit warned about reference support)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = KernelNPLM(n_centers=3000, sigma=2.4, penalty=penalty).fit(x_data, x_ref, w_ref)
    warned = any(issubclass(item.category, ReferenceSupportWarning) for item in caught)
    return estimator.t_, float(estimator.fit_.f_data.max()), warned


def run(n_toys: int, seed: int) -> str:
    bench = Exponential1D()
    x_ref, w_ref = bench.reference(np.random.default_rng(seed))
    top = float(x_ref.max())
    toys = [bench.data(np.random.default_rng([seed, index])) for index in range(n_toys)]
    lines = [f"Largest reference event at x = {top:.2f}; {n_toys} null toys; one data event added beyond it.", "",
             "| lambda | distance beyond the last reference event | median t increase | largest f at a data event "
             "(median) | fits warned |", "|---|---|---|---|---|"]
    for penalty in PENALTIES:
        plain = [fit(toy, x_ref, w_ref, penalty)[0] for toy in toys]
        for distance in DISTANCES:
            results = [fit(np.vstack([toy, [[top + distance]]]), x_ref, w_ref, penalty) for toy in toys]
            increase = np.median([t - base for (t, _, _), base in zip(results, plain)])
            lines.append(f"| {penalty:g} | {distance:g} | {increase:.3g} | {np.median([f for _, f, _ in results]):.3g} | "
                         f"{sum(warned for _, _, warned in results)} of {n_toys} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    print(run(arguments.toys, arguments.seed))


if __name__ == "__main__":
    main()
