"""The bounds on every size a user can set, and the one check of "a count within [low, high]".

A size far beyond what any run could use (``--nz 1000000000000``,
``chebyshev --m 10000000``, ``bench --repeats 1000000000``) is refused before
any allocation, with the flag that sets it, instead of failing later as an
out-of-memory error or running for days. The bounds are absolute; sizes below
them are still held against the memory available by
:mod:`gan_probe.analyses.memory`.

- :data:`MAX_COUNT` (2**31 - 1): numbers of latents, images, batch and chunk
  sizes, steps. Beyond it torch's 32-bit indexed kernels fail on some devices.
- :data:`MAX_NZ` (2**20): the latent size. A StyleGAN2's w+ at 1024x1024 has
  18 x 512 = 9,216 axes; every analysis needs at least one product per axis.
- :data:`MAX_DEGREE` (2,048): the Chebyshev/Taylor degree. Its interpolation
  matrix is (m+1)^2 float64 (34 MB at the bound), and a degree of 2,048
  already resolves a condition number of about 1e6 (the error falls like
  exp(-2 m / sqrt(cond))).
- :data:`MAX_KRYLOV_STEPS` (10,000): Golub-Kahan steps (slq ``--steps``, the
  bounds' ``--t``). They stop at nz anyway; beyond 10,000 the exact spectrum
  costs fewer products.
- :data:`MAX_PROBES` (10,000): probe vectors (slq ``--probes``, ``--p``): the
  standard error at 10,000 probes is 1% of one probe's.
- :data:`MAX_GRID_SIZE` (1,024): points per side of ``loglik --grid``, a
  million log-determinants.
- :data:`MAX_REPEATS` (1,000): timed runs and warm-ups of ``bench``.
- :data:`SEED_MAX` (2**32 - 1): seeds (``--seed``, ``--noise seed:N``); seeds
  derived from one per latent and per step stay within torch's 64-bit range.
- :data:`MAX_TENSOR_ELEMENTS` (2**31 - 1): the values one tensor of a
  checkpoint may declare (8 GiB in float32; the largest StyleGAN2 holds 30
  million values in all).

Imports nothing of the project but :mod:`gan_probe.errors`.
"""

from __future__ import annotations

from gan_probe.errors import GanProbeError

MAX_COUNT = 2**31 - 1
MAX_NZ = 2**20
MAX_DEGREE = 2048
MAX_KRYLOV_STEPS = 10_000
MAX_PROBES = 10_000
MAX_GRID_SIZE = 1024
MAX_REPEATS = 1000
SEED_MAX = 2**32 - 1
MAX_TENSOR_ELEMENTS = 2**31 - 1


def check_count(
    value: object, what: str, *, param: str | None, low: int = 1, high: int = MAX_COUNT, error: type = GanProbeError
) -> int:
    """``value`` as an int when it is one (not a bool) in [low, high]; else ``error`` naming ``what``, the
    bounds and the value, with ``param`` (the argument or field that sets it, which the command line turns
    into its flag)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{what} must be an integer from {low:,} to {high:,}, got {value!r}", param=param)
    return value


__all__ = [
    "MAX_COUNT",
    "MAX_DEGREE",
    "MAX_GRID_SIZE",
    "MAX_KRYLOV_STEPS",
    "MAX_NZ",
    "MAX_PROBES",
    "MAX_REPEATS",
    "MAX_TENSOR_ELEMENTS",
    "SEED_MAX",
    "check_count",
]
