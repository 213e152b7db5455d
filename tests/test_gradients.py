"""Spectral backpropagation: gradients of ln det M against autograd through a dense float64 log-det."""

from __future__ import annotations

import math

import torch

from gan_probe.spectral.estimators import ChebyshevParams, estimate_half_logdet
from gan_probe.spectral.jacobian import jacobian
from gan_probe.spectral.operator import JacobianOperator
from tests.conftest import dense_half_logdet, logdet_of


def dense_logdet(module: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """(B,) ln det J^T J by the dense twin, differentiable w.r.t. z and the module's parameters."""
    return 2 * dense_half_logdet(module, z, create_graph=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_exact_surrogate_gradient_matches_dense_for_z_and_parameters(mlp_gen, dcgan_gen):
    for gen in (mlp_gen, dcgan_gen):
        module = gen.module.requires_grad_(True)
        params = [p for p in module.parameters()]
        z = gen.prior.sample(3, gen.nz, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
        ours = (weights * logdet_of(jacobian(gen.flat, z))).sum()
        g_ours = torch.autograd.grad(ours, [z, *params])
        ref = (weights * dense_logdet(module, z)).sum()
        g_ref = torch.autograd.grad(ref, [z, *params])
        assert math.isclose(float(ours.detach()), float(ref.detach()), rel_tol=1e-10)
        for a, b in zip(g_ours, g_ref):
            if b.norm() > 0:
                assert _rel(a, b) < 1e-5
        module.requires_grad_(False)


class Residual2d(torch.nn.Module):
    """f(z) = z + u tanh(W z + b) summed over 4 units: a non-invertible 2-D residual network (paper section 3)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(0.5 * torch.randn(4, 2, generator=gen, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        self.u = torch.nn.Parameter(0.5 * torch.randn(4, 2, generator=gen, dtype=torch.float64))
        self.shift = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z * self.log_scale.exp() + self.shift
        return h + torch.tanh(h @ self.w.T + self.b) @ self.u


def test_kl_fit_of_a_2d_residual_network_with_estimator_gradients():
    """Minimise KL(Q || P) = E_z[ln P_Z(z) - 1/2 ln det M(z) - ln P(f(z))] with the Chebyshev estimator's gradient."""
    torch.manual_seed(0)
    net = Residual2d()
    target_mean = torch.tensor([2.0, -1.0], dtype=torch.float64)
    target_std = torch.tensor([0.5, 1.5], dtype=torch.float64)

    def log_target(x: torch.Tensor) -> torch.Tensor:
        return (-0.5 * ((x - target_mean) / target_std) ** 2 - torch.log(target_std) - 0.5 * math.log(2 * math.pi)).sum(
            -1
        )

    def exact_half(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * logdet_of(jacobian(net, z))

    data = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    params = ChebyshevParams(m=20, p=8, t=10, eps="auto")
    losses = []
    for step in range(80):
        z = torch.randn(64, 2, generator=data, dtype=torch.float64)
        est = estimate_half_logdet(
            JacobianOperator(net, z), "chebyshev", params, generator=torch.Generator().manual_seed(step)
        )
        loss = (-est.half_logdet - log_target(net(z))).mean()  # ln P_Z(z) does not depend on the parameters
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            losses.append(float((-exact_half(z) - log_target(net(z))).mean()))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0, losses[::10]
    z = torch.randn(256, 2, generator=data, dtype=torch.float64)
    with torch.no_grad():
        est = estimate_half_logdet(
            JacobianOperator(net, z),
            "chebyshev",
            ChebyshevParams(m=20, p=20, t=10, eps="auto"),
            generator=torch.Generator(),
        )
        err = (est.half_logdet - exact_half(z)).abs()
    assert float(err.median()) < 0.05, float(err.median())
