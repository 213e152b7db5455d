"""Energy distance, Gaussian-kernel MMD and their permutation test, against direct float64 sums and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gan_probe.analyses.two_sample import two_sample_test
from gan_probe.errors import GanProbeError


def _direct(x: np.ndarray, y: np.ndarray, kernel) -> float:
    """The unbiased U-statistic by explicit loops over pairs."""
    n, m = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(kernel(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_energy_distance_and_mmd_match_direct_float64_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.4, size=(5, 3))
    energy = two_sample_test(torch.from_numpy(x), torch.from_numpy(y), statistic="energy", num_permutations=0)
    ref = _direct(x, y, lambda a, b: -np.linalg.norm(a - b))
    assert energy.value == pytest.approx(ref, rel=1e-12)
    # the same statistic in its textbook form 2E|X-Y| - E|X-X'| - E|Y-Y'|
    assert energy.p_value is None and energy.bandwidth is None
    pooled = np.concatenate([x, y])
    s = float(np.median([np.linalg.norm(a - b) for a, b in itertools.combinations(pooled, 2)]))
    mmd = two_sample_test(torch.from_numpy(x), torch.from_numpy(y), statistic="mmd", num_permutations=0)
    assert mmd.bandwidth == pytest.approx(s, rel=1e-12)
    ref_mmd = _direct(x, y, lambda a, b: math.exp(-np.sum((a - b) ** 2) / (2 * s**2)))
    assert mmd.value == pytest.approx(ref_mmd, rel=1e-10)


def test_point_masses_give_the_closed_forms():
    """x all at a, y all at b: energy = 2|a - b|; the median distance is |a - b| (9 of the 15 pairs), so
    MMD^2 = 2 - 2 exp(-1/2)."""
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([4.0, -2.0])
    x, y = a.repeat(3, 1).double(), b.repeat(3, 1).double()
    assert two_sample_test(x, y, statistic="energy", num_permutations=0).value == pytest.approx(10.0, rel=1e-12)
    mmd = two_sample_test(x, y, statistic="mmd", num_permutations=0)
    assert mmd.bandwidth == pytest.approx(5.0) and mmd.value == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-12)


@pytest.mark.parametrize("statistic", ["energy", "mmd"])
def test_permutation_p_values_are_uniform_under_the_null_and_small_under_a_shift(statistic):
    gen = torch.Generator().manual_seed(0)
    p = np.array(
        [
            two_sample_test(
                torch.randn(15, 2, generator=gen, dtype=torch.float64),
                torch.randn(15, 2, generator=gen, dtype=torch.float64),
                statistic=statistic,
                num_permutations=99,
                seed=k,
            ).p_value
            for k in range(200)
        ]
    )
    # coarse: a uniform p has mean 1/2 (sd of the mean of 200: 0.02) and P(p <= 0.1) = 0.1 (sd 0.021)
    assert abs(p.mean() - 0.5) < 0.07
    assert 0.03 < (p <= 0.1).mean() < 0.18
    shifted = two_sample_test(
        torch.randn(30, 2, generator=gen, dtype=torch.float64),
        1.5 + torch.randn(30, 2, generator=gen, dtype=torch.float64),
        statistic=statistic,
        num_permutations=199,
    )
    assert shifted.p_value == pytest.approx(1 / 200)


def test_permutation_test_is_seeded():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=gen), torch.randn(9, 3, generator=gen) + 0.3
    first = two_sample_test(x, y, num_permutations=300, seed=5)
    assert first == two_sample_test(x, y, num_permutations=300, seed=5)
    assert first.p_value != two_sample_test(x, y, num_permutations=300, seed=6).p_value


def test_two_sample_refuses_bad_samples():
    x = torch.zeros(5, 2)
    with pytest.raises(GanProbeError, match="at least 2"):
        two_sample_test(x[:1], x)
    with pytest.raises(GanProbeError, match="shape"):
        two_sample_test(x, torch.zeros(5, 3))
    with pytest.raises(GanProbeError, match="NaN"):
        two_sample_test(x, torch.full((3, 2), math.nan))
    with pytest.raises(GanProbeError, match="unknown"):
        two_sample_test(x, x, statistic="ks")
