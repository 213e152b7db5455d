"""gan_probe.spectral.eigen against dense float64 references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from gan_probe.spectral.eigen import exact_eigen, fix_signs, spectrum_concentration
from gan_probe.spectral.operator import JacobianOperator
from tests.conftest import Linear, dense_jacobian, wrap


def dense_metric(gen, z: torch.Tensor) -> torch.Tensor:
    """(B, nz, nz) M = J^T J from plain autograd (one latent at a time), float64."""
    jac = dense_jacobian(gen.flat, z)
    return jac.transpose(1, 2) @ jac


def eigh_descending(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam, vec = torch.linalg.eigh(m)
    return lam.flip(-1), fix_signs(vec.flip(-1))


@pytest.mark.parametrize("name", ["mlp_gen", "dcgan_gen"])
def test_matches_eigh_of_dense_metric(name, request):
    gen = request.getfixturevalue(name)
    z = gen.prior.sample(4, gen.nz, generator=torch.Generator().manual_seed(5))
    eig = exact_eigen(JacobianOperator(gen.flat, z))
    lam_ref, vec_ref = eigh_descending(dense_metric(gen, z))
    scale = lam_ref[:, :1]
    torch.testing.assert_close(eig.eigenvalues, lam_ref, rtol=0, atol=1e-10 * float(scale.max()))
    # the seeded spectra are simple (well separated), so eigenvectors agree up to the sign convention
    gaps = (lam_ref[:, :-1] - lam_ref[:, 1:]).min()
    assert gaps > 1e-6 * float(scale.max())
    torch.testing.assert_close(eig.eigenvectors, vec_ref, rtol=0, atol=1e-8)
    # orthonormal, and M v_i = lambda_i v_i
    eye = torch.eye(gen.nz, dtype=torch.float64).expand(z.shape[0], -1, -1)
    torch.testing.assert_close(eig.eigenvectors.transpose(-1, -2) @ eig.eigenvectors, eye, rtol=0, atol=1e-12)


def test_ill_conditioned_linear_generator_keeps_small_eigenvalues():
    """cond(M) = 1e14: eigh of J^T J loses the small end; the SVD of J does not."""
    g = torch.Generator().manual_seed(11)
    nz, n = 6, 40
    u, _ = torch.linalg.qr(torch.randn(n, nz, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(nz, nz, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -7, nz, dtype=torch.float64)
    gen = wrap(Linear(u @ torch.diag(s) @ v.T), nz)
    z = torch.randn(3, nz, generator=g, dtype=torch.float64)
    eig = exact_eigen(JacobianOperator(gen.flat, z))
    torch.testing.assert_close(eig.eigenvalues, (s**2).expand(3, -1), rtol=1e-7, atol=0)
    torch.testing.assert_close(eig.eigenvectors, fix_signs(v).expand(3, -1, -1), rtol=0, atol=1e-7)
    assert float(eig.condition[0]) == pytest.approx(1e14, rel=1e-6)


def test_wide_jacobian_pads_with_null_space():
    """N < nz: nz - N zero eigenvalues, and V is still a full orthonormal basis."""
    a = torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gen = wrap(Linear(a), 6)
    eig = exact_eigen(JacobianOperator(gen.flat, torch.zeros(2, 6, dtype=torch.float64)))
    assert torch.all(eig.eigenvalues[:, 3:] == 0)
    assert bool(eig.singular.all())
    m = a.T @ a
    v = eig.eigenvectors[0]
    torch.testing.assert_close(m @ v, v * eig.eigenvalues[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(v.T @ v, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_sign_convention_is_deterministic(mlp_gen):
    z = mlp_gen.prior.sample(5, mlp_gen.nz, generator=torch.Generator().manual_seed(6))
    vec = exact_eigen(JacobianOperator(mlp_gen.flat, z)).eigenvectors
    lead = torch.gather(vec, -2, vec.abs().argmax(-2, keepdim=True))
    assert bool((lead > 0).all())
    # any sign pattern of the input maps to the same output
    flips = torch.where(torch.rand(5, 1, mlp_gen.nz, generator=torch.Generator().manual_seed(7)) < 0.5, -1.0, 1.0)
    assert torch.equal(fix_signs(vec * flips.double()), vec)
    assert torch.equal(exact_eigen(JacobianOperator(mlp_gen.flat, z)).eigenvectors, vec)


def test_batch_and_chunk_size_invariance(dcgan_gen):
    z = dcgan_gen.prior.sample(4, dcgan_gen.nz, generator=torch.Generator().manual_seed(8))
    full = exact_eigen(JacobianOperator(dcgan_gen.flat, z))
    ones = [exact_eigen(JacobianOperator(dcgan_gen.flat, z[i : i + 1], chunk_size=2)) for i in range(4)]
    torch.testing.assert_close(torch.cat([e.eigenvalues for e in ones]), full.eigenvalues, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat([e.eigenvectors for e in ones]), full.eigenvectors, rtol=0, atol=1e-10)


def test_spectrum_concentration_closed_forms():
    lam = torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    c = spectrum_concentration(lam, top=1)
    torch.testing.assert_close(c["top_share"][:3], torch.tensor([1.0, 0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(c["participation_ratio"][:3], torch.tensor([1.0, 4.0, 16 / 10], dtype=torch.float64))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(c["effective_rank"][:3], torch.tensor([1.0, 4.0, math.exp(h)], dtype=torch.float64))
    assert all(math.isnan(float(v[3])) for v in c.values())
