"""``--dtype auto``: the exact spectrum in float32, recomputed in float64 where float32 is not enough.

docs/design.md §2.2 flags a latent ``precision_warning`` when s_min of its J lies
below the rounding level of the dtype J was computed in, and ``singular`` when
s_min is zero to float64 precision. Computed in float32, either flag may be an
artefact: a J singular in float32 need not be singular in float64 (a saturated
tanh whose derivative rounds to 0 in float32), and a float32 s_min at rounding
level is noise. With ``--dtype auto`` (:attr:`LoadedGenerator.auto_float64`)
every such latent is recomputed with the generator in float64 (a float64 copy of
the module, made the first time a latent needs it: :meth:`LoadedGenerator.float64`),
and its spectrum replaces the float32 one. The caller reports how many latents
were promoted. Only flags still raised in float64 remain; a number they mark is
rounding noise and stays out of the headline figures.
"""

from __future__ import annotations

import torch

from gan_probe.analyses.common import jacobian_operator
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.eigen import exact_eigen
from gan_probe.spectral.exact import Spectrum, exact_spectrum


def auto_spectrum(
    gen: LoadedGenerator,
    z: torch.Tensor,
    chunk_size: int | None = None,
    *,
    eigen: bool = False,
    grad: bool = False,
) -> tuple[Spectrum, torch.Tensor]:
    """(the exact spectrum at latents z (B, nz), a (B,) CPU bool mask of the latents recomputed in float64).

    ``eigen``: with eigenvectors (signs fixed, :func:`gan_probe.spectral.eigen.exact_eigen`); ``grad``: the
    half log-determinant carries its gradient (for promoted latents, through the float64 generator).
    """
    spec = _spectrum(gen, z, chunk_size, eigen=eigen, grad=grad)
    promoted = torch.zeros(z.shape[0], dtype=torch.bool)
    if not gen.auto_float64 or gen.dtype == torch.float64 or gen.output_dim < gen.nz:
        return spec, promoted  # (a wide J, N < nz, is singular in every dtype)
    flagged = (spec.precision_warning | spec.singular).cpu()
    if not bool(flagged.any()) or gen.float64_unavailable is not None:
        return spec, promoted
    idx = flagged.nonzero().flatten()
    try:
        twin = gen.float64()
        spec64 = _spectrum(twin, z[idx.to(z.device)], chunk_size, eigen=eigen, grad=grad)
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - no float64 for this generator (MPS, a program fixed to float32)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        gen.float64_unavailable = message
        gen.notes.append(
            f"--dtype auto: the generator cannot run in float64 ({message}); latents flagged in float32 keep "
            "their flags and are left out of the headline figures"
        )
        return spec, promoted
    return merge_spectra(spec, spec64, idx), flagged


def _spectrum(gen: LoadedGenerator, z: torch.Tensor, chunk_size: int | None, *, eigen: bool, grad: bool) -> Spectrum:
    op = jacobian_operator(gen, z, chunk_size)
    return exact_eigen(op) if eigen else exact_spectrum(op, grad=grad)


def merge_spectra(base: Spectrum, part: Spectrum, idx: torch.Tensor) -> Spectrum:
    """``base`` with the latents ``idx`` replaced by ``part`` (differentiable where the inputs are)."""

    def put(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = a.clone()
        out[idx.to(a.device)] = b.to(a.device, a.dtype)
        return out

    vectors = None
    if base.eigenvectors is not None and part.eigenvectors is not None:
        vectors = put(base.eigenvectors, part.eigenvectors)
    return Spectrum(
        singular_values=put(base.singular_values, part.singular_values),
        singular=put(base.singular, part.singular),
        precision_warning=put(base.precision_warning, part.precision_warning),
        half_logdet=put(base.half_logdet, part.half_logdet),
        eigenvectors=vectors,
    )


__all__ = ["auto_spectrum", "merge_spectra"]
