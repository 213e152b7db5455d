"""The exact Jacobian and spectrum against dense float64 references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from gan_probe.spectral.exact import spectrum_from_jacobian
from gan_probe.spectral.jacobian import jacobian
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.route import exact_spectrum
from tests.conftest import dense_half_logdet, dense_jacobian, logdet_of


@pytest.mark.parametrize("fixture", ["mlp_gen", "dcgan_gen"])
def test_jacobian_matches_autograd(fixture, request):
    gen = request.getfixturevalue(fixture)
    z = torch.randn(3, gen.nz, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jac = jacobian(gen.flat, z, chunk_size=2)
    assert jac.shape == (3, gen.output_dim, gen.nz)
    torch.testing.assert_close(jac, dense_jacobian(gen.flat, z), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fixture", ["mlp_gen", "dcgan_gen"])
def test_logdet_matches_slogdet(fixture, request):
    gen = request.getfixturevalue(fixture)
    z = torch.randn(4, gen.nz, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = exact_spectrum(JacobianOperator(gen.flat, z))
    dense = dense_jacobian(gen.flat, z)
    sign, ref = torch.linalg.slogdet(dense.transpose(1, 2) @ dense)
    assert (sign > 0).all()
    torch.testing.assert_close(2 * spec.half_logdet, ref, rtol=1e-9, atol=1e-9)
    eig = torch.linalg.eigvalsh(dense.transpose(1, 2) @ dense).flip(-1)
    torch.testing.assert_close(spec.eigenvalues, eig, rtol=1e-8, atol=1e-12)


def test_linear_generator_closed_form(linear_gen):
    gen, a = linear_gen
    z = torch.randn(5, gen.nz, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    spec = exact_spectrum(JacobianOperator(gen.flat, z))
    s = torch.linalg.svdvals(a)
    expected = torch.log(s).sum()
    torch.testing.assert_close(spec.half_logdet, expected.expand(5), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spec.condition, (s[0] / s[-1]).pow(2).expand(5), rtol=1e-10, atol=0)


@pytest.mark.parametrize("chunk", [1, 2, 5, 6, 100])
def test_chunk_size_does_not_change_result(dcgan_gen, chunk):
    z = torch.randn(3, dcgan_gen.nz, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = jacobian(dcgan_gen.flat, z, chunk_size=dcgan_gen.nz)
    torch.testing.assert_close(jacobian(dcgan_gen.flat, z, chunk_size=chunk), ref, rtol=0, atol=1e-14)


def test_double_vjp_fallback_matches_forward_mode(mlp_gen):
    from gan_probe.spectral.jacobian import double_vjp_columns, jvp_columns

    z = torch.randn(2, mlp_gen.nz, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(
        double_vjp_columns(mlp_gen.flat, z, 0, mlp_gen.nz), jvp_columns(mlp_gen.flat, z, 0, mlp_gen.nz)
    )


class _NoForwardAD(torch.autograd.Function):
    """tanh with a backward but no forward-mode rule: forces the double-VJP fallback."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def test_module_without_forward_ad_uses_fallback():
    torch.manual_seed(5)
    lin = torch.nn.Linear(3, 7).double()

    def fn(z):
        return _NoForwardAD.apply(lin(z))

    z = torch.randn(2, 3, dtype=torch.float64)
    jac = jacobian(fn, z)
    ref = dense_jacobian(fn, z, vectorize=False)  # the custom Function has no vmap rule
    torch.testing.assert_close(jac, ref)


def test_singular_jacobian_is_flagged_not_nan():
    jac = torch.zeros(2, 10, 3, dtype=torch.float64)
    jac[0, :3, :3] = torch.eye(3)
    jac[1, 0, 0] = 1.0  # rank 1
    spec = spectrum_from_jacobian(jac)
    assert spec.singular.tolist() == [False, True]
    assert spec.half_logdet[0] == 0.0
    assert spec.half_logdet[1] == -math.inf
    assert spec.condition[1] == math.inf
    assert not torch.isnan(spec.half_logdet).any()


def test_more_latents_than_outputs_is_singular():
    spec = spectrum_from_jacobian(torch.randn(1, 2, 4, dtype=torch.float64))
    assert spec.singular.item() and spec.singular_values.shape == (1, 4)


def test_ill_conditioned_float64_keeps_accuracy():
    """cond(M) = 1e14: the QR/SVD route keeps ln det, a float32 J^T J would not."""
    u, _ = torch.linalg.qr(torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
    s = torch.logspace(0, -7, 6, dtype=torch.float64)
    jac = (u * s)[None]
    spec = spectrum_from_jacobian(jac)
    torch.testing.assert_close(spec.half_logdet, torch.log(s).sum()[None], rtol=1e-12, atol=1e-10)
    assert not spec.singular.item()


def test_precision_warning_for_float32_jacobian():
    u, _ = torch.linalg.qr(torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    s = torch.logspace(0, -7, 6, dtype=torch.float64)
    spec = spectrum_from_jacobian((u * s)[None].float())
    assert spec.precision_warning.item()


def test_surrogate_gradient_matches_dense_autograd(mlp_gen):
    z = torch.randn(3, mlp_gen.nz, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    z1 = z.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(logdet_of(jacobian(mlp_gen.flat, z1)).sum(), z1)
    z2 = z.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(2 * dense_half_logdet(mlp_gen.flat, z2, create_graph=True).sum(), z2)
    assert ((g1 - g2).norm() / g2.norm()).item() < 1e-10
