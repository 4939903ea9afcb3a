import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def gaussian_samples(rng):
    """Small 2-D samples: data from N(0.5, 0.8), reference from N(0, 1), N(R) = N_D (the data's
    tails lighter than the reference's, so that the reference sample supports every data event)."""
    x_data = rng.normal(0.5, 0.8, size=(300, 2))
    x_ref = rng.normal(0.0, 1.0, size=(3000, 2))
    return x_data, x_ref, 300 / 3000
