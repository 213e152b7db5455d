"""Two-sample statistics: energy distance, MMD with a Gaussian kernel, and their permutation test.

For samples x (n, d) and y (m, d), both statistics are the unbiased
U-statistics of a maximum mean discrepancy,

.. math::

    \\widehat{D}_k = \\frac{1}{n(n-1)} \\sum_{i \\ne j} k(x_i, x_j)
        + \\frac{1}{m(m-1)} \\sum_{i \\ne j} k(y_i, y_j)
        - \\frac{2}{nm} \\sum_{i, j} k(x_i, y_j),

(Gretton et al. 2012, "A kernel two-sample test", eq. 3) with

- the **energy distance** (Szekely & Rizzo 2004): k(a, b) = -|a - b|_2, so
  that D = 2 E|X - Y| - E|X - X'| - E|Y - Y'| (0 when the distributions are
  equal, and in expectation only then);
- **MMD^2** with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 s^2)),
  whose bandwidth s is the median heuristic: the median of the pairwise
  distances |a - b|_2 over all pairs of distinct points of the pooled sample (fixed before
  permuting, so every permutation uses the same kernel).

Being unbiased, either may come out slightly negative when the samples come
from one distribution. The permutation p-value (Good 2005) is
(1 + #{b : D_b >= D}) / (1 + B) over B seeded random relabellings of the
pooled sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gan_probe.analyses.common import seeded_generator
from gan_probe.errors import GanProbeError

STATISTICS = ("energy", "mmd")
#: Permutations whose statistics are computed in one matrix product.
PERMUTATION_BLOCK = 256


@dataclass
class TwoSampleResult:
    """A statistic of x against y, with its permutation p-value (None without permutations)."""

    statistic: str
    value: float
    p_value: float | None
    num_permutations: int
    bandwidth: float | None  # the Gaussian kernel's s (MMD only)
    num_x: int
    num_y: int

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "value": self.value,
            "p_value": self.p_value,
            "num_permutations": self.num_permutations,
            "bandwidth": self.bandwidth,
            "num_x": self.num_x,
            "num_y": self.num_y,
        }


def describe_statistic(statistic: str) -> str:
    """One line naming the statistic and its kernel, for reports."""
    if statistic == "energy":
        return "energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (unbiased U-statistic, Euclidean norm)"
    return (
        "MMD^2 (unbiased U-statistic) with the Gaussian kernel exp(-|a-b|^2 / (2 s^2)), "
        "s = median pairwise distance of the pooled sample (median heuristic)"
    )


def pairwise_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|_2 (n, m) in float64, through the Gram expansion clamped at 0."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    sq = x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2.0 * x @ y.T
    return sq.clamp_min(0.0).sqrt()


def median_bandwidth(distances: torch.Tensor) -> float:
    """The median (the mean of the two middle values for an even count) of the distances between distinct points
    of the pooled sample, the entries above the diagonal of ``distances`` (N, N): the median heuristic."""
    n = distances.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    return float(np.median(distances[i, j].numpy()))  # torch.quantile refuses more than 2^24 values


def kernel_matrix(statistic: str, distances: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
    """k(a, b) on the pooled sample from its distances: -d (energy) or exp(-d^2 / (2 s^2)) (mmd)."""
    if statistic == "energy":
        return -distances
    assert bandwidth is not None
    return torch.exp(-distances.square() / (2.0 * bandwidth**2))


def _statistics(k: torch.Tensor, labels: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The U-statistic for each labelling: ``labels`` (N, P) with 1 for x and 0 for y, ``n`` ones per column."""
    a = labels.to(k.dtype)
    b = 1.0 - a
    ka, kb = k @ a, k @ b
    diag = k.diagonal()[:, None]
    xx = (a * ka).sum(0) - (a * diag).sum(0)
    yy = (b * kb).sum(0) - (b * diag).sum(0)
    xy = (a * kb).sum(0)
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def two_sample_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    statistic: str = "energy",
    num_permutations: int = 1000,
    seed: int = 0,
) -> TwoSampleResult:
    """The ``statistic`` (energy or mmd) of x (n, d) against y (m, d), with a seeded permutation p-value.

    The pooled distance matrix is computed once in float64; each block of
    permutations costs one (N, N) x (N, block) product.
    """
    if statistic not in STATISTICS:
        raise GanProbeError(f"unknown two-sample statistic {statistic!r}: use {' or '.join(STATISTICS)}")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise GanProbeError(f"two samples of shape (n, d) and (m, d) needed, got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m = int(x.shape[0]), int(y.shape[0])
    if n < 2 or m < 2:
        raise GanProbeError(f"a two-sample test needs at least 2 points in each sample, got {n} and {m}")
    if num_permutations < 0:
        raise GanProbeError(f"the number of permutations must be >= 0, got {num_permutations}", param="permutations")
    pooled = torch.cat([x.to(torch.float64), y.to(torch.float64)])
    if not torch.isfinite(pooled).all():
        raise GanProbeError("a two-sample test got NaN or infinite points")
    dist = pairwise_distances(pooled, pooled)
    dist.fill_diagonal_(0.0)
    bandwidth = median_bandwidth(dist) if statistic == "mmd" else None
    if bandwidth is not None and not bandwidth > 0:
        bandwidth = 1.0  # more than half the pairs coincide: any bandwidth sees the same ties
    k = kernel_matrix(statistic, dist, bandwidth)
    total = n + m
    observed = torch.zeros(total, 1, dtype=torch.float64)
    observed[:n] = 1.0
    value = float(_statistics(k, observed, n, m)[0])
    p_value = None
    if num_permutations:
        gen = seeded_generator(seed)
        exceed, done = 0, 0
        while done < num_permutations:
            block = min(PERMUTATION_BLOCK, num_permutations - done)
            order = torch.argsort(torch.rand(block, total, generator=gen, dtype=torch.float64), dim=1)
            labels = (order < n).to(torch.float64).T  # (N, block): a random n-subset per column
            stats = _statistics(k, labels, n, m)
            # a tolerance for ties: a permutation that reproduces the observed split counts as exceeding
            exceed += int((stats >= value - 1e-12 * max(1.0, abs(value))).sum())
            done += block
        p_value = (1 + exceed) / (1 + num_permutations)
    return TwoSampleResult(statistic, value, p_value, num_permutations, bandwidth, n, m)


__all__ = [
    "STATISTICS",
    "TwoSampleResult",
    "describe_statistic",
    "median_bandwidth",
    "pairwise_distances",
    "two_sample_test",
]
