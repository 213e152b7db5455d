"""The Gram route (M = J^T J by blocks, J never held) against the dense QR route and dense float64 references."""

from __future__ import annotations

import pytest
import torch

from gan_probe.errors import GanProbeError
from gan_probe.spectral.eigen import fix_signs
from gan_probe.spectral.gram import gram_spectrum
from gan_probe.spectral.jacobian import jacobian
from gan_probe.spectral.operator import JacobianOperator
from gan_probe.spectral.plan import RunPlan
from gan_probe.spectral.route import choose_route, dense_route_bytes, exact_spectrum, gram_route_bytes

FIXTURES = ["mlp_gen", "dcgan_gen", "linear_gen"]


def _op(request, fixture: str, batch: int = 3, seed: int = 0) -> JacobianOperator:
    gen = request.getfixturevalue(fixture)
    gen = gen[0] if isinstance(gen, tuple) else gen
    z = torch.randn(batch, gen.nz, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return JacobianOperator(gen.flat, z)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().amax(-1, keepdim=True)).max())


@pytest.mark.parametrize("fixture", FIXTURES)
def test_gram_matches_dense(fixture, request):
    op = _op(request, fixture)
    dense = exact_spectrum(op, route="dense")
    gram = exact_spectrum(op, route="gram")
    assert (dense.route, gram.route) == ("dense", "gram")
    jac = jacobian(op.fn, op.z)
    ref = torch.linalg.eigvalsh(jac.transpose(1, 2) @ jac).flip(-1)
    assert _rel(gram.eigenvalues, ref) < 1e-10
    assert _rel(gram.eigenvalues, dense.eigenvalues) < 1e-10
    torch.testing.assert_close(gram.half_logdet, dense.half_logdet, rtol=1e-10, atol=1e-10)
    assert not gram.singular.any() and not gram.precision_warning.any()


@pytest.mark.parametrize("block", [1, 2, 4, 100])
def test_block_size_does_not_change_result(dcgan_gen, block):
    z = torch.randn(2, dcgan_gen.nz, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    op = JacobianOperator(dcgan_gen.flat, z)
    ref = gram_spectrum(op, block=dcgan_gen.nz)
    out = gram_spectrum(op, block=block)
    assert _rel(out.eigenvalues, ref.eigenvalues) < 1e-12
    torch.testing.assert_close(out.half_logdet, ref.half_logdet, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fixture", ["mlp_gen", "dcgan_gen"])
def test_eigenvectors_match_dense(fixture, request):
    op = _op(request, fixture, batch=2, seed=4)
    dense = exact_spectrum(op, route="dense", vectors=True)
    gram = exact_spectrum(op, route="gram", vectors=True, block=2)
    assert dense.eigenvectors is not None and gram.eigenvectors is not None
    torch.testing.assert_close(fix_signs(gram.eigenvectors), fix_signs(dense.eigenvectors), rtol=0, atol=1e-8)


def _float32_linear(log10_cond_a: float) -> JacobianOperator:
    """G(z) = A z in float32 with A (40 x 6) of singular values log-spaced from 1 to 10^-log10_cond_a."""
    gen = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(40, 6, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -log10_cond_a, 6, dtype=torch.float64)
    a = (u * s) @ v.T
    a32 = a.to(torch.float32)
    z = torch.randn(2, 6, generator=gen).to(torch.float32)
    return JacobianOperator(lambda x: x @ a32.T, z)


def test_precision_flag_fires_for_ill_conditioned_float32():
    spec = gram_spectrum(_float32_linear(4.5))  # cond(M) = 1e9 > 1 / (nz eps32) ~ 1.4e6
    assert spec.precision_warning.all() and not spec.singular.any()
    dense = exact_spectrum(_float32_linear(4.5), route="dense")  # the QR route resolves it
    assert not dense.precision_warning.any() and not dense.singular.any()


def test_precision_flag_quiet_when_well_conditioned():
    spec = gram_spectrum(_float32_linear(1.0))  # cond(M) = 100
    assert not spec.precision_warning.any() and not spec.singular.any()
    ref = exact_spectrum(_float32_linear(1.0), route="dense")
    torch.testing.assert_close(spec.half_logdet, ref.half_logdet, rtol=1e-5, atol=1e-5)


def test_wide_jacobian_is_singular():
    a = torch.randn(3, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    op = JacobianOperator(lambda x: x @ a.T, torch.zeros(2, 5, dtype=torch.float64))
    spec = gram_spectrum(op)
    assert spec.singular.all() and torch.isinf(spec.half_logdet).all()


def test_auto_route_follows_available_memory(dcgan_gen, monkeypatch):
    from gan_probe import device
    from gan_probe.analyses import memory
    from gan_probe.analyses.plan import plan_run

    nz, n = dcgan_gen.nz, dcgan_gen.output_dim
    z = torch.randn(2, nz, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    op = JacobianOperator(dcgan_gen.flat, z)
    sizes = dict(batch=2, output_dim=n, nz=nz, itemsize=8, chunk=nz, activations=4 * n)
    big = choose_route(available=10**15, **sizes)
    small = gram_route_bytes(2, n, nz, 8, block=1, activations=4 * n)
    assert big.route == "dense" and big.dense_bytes == dense_route_bytes(2, n, nz, 8, chunk=nz, activations=4 * n)
    assert small < big.dense_bytes and big.fits is True
    low = choose_route(available=small, **sizes)
    assert (low.route, low.block, low.bytes, low.fits) == ("gram", 1, small, True)
    assert choose_route(available=small - 1, **sizes).fits is False  # by neither route
    assert choose_route(available=None, **sizes).route == "dense"  # no figure: dense
    # a run's plan takes the route its memory allows, measured once; the spectrum follows the plan
    monkeypatch.setattr(device, "available_bytes", lambda dev: 10**15)
    high_plan = plan_run(dcgan_gen, batch=2)
    act = memory.activation_elements(dcgan_gen)
    monkeypatch.setattr(device, "available_bytes", lambda dev: gram_route_bytes(2, n, nz, 8, block=1, activations=act))
    low_plan = plan_run(dcgan_gen, batch=2)
    assert (high_plan.route, low_plan.route) == ("dense", "gram")
    high = exact_spectrum(op, route=high_plan.route, block=high_plan.block)
    low = exact_spectrum(op, route=low_plan.route, block=low_plan.block)
    assert (high.route, low.route) == ("dense", "gram")
    assert _rel(low.eigenvalues, high.eigenvalues) < 1e-10
    torch.testing.assert_close(low.half_logdet, high.half_logdet, rtol=1e-10, atol=1e-10)


def test_gradient_stays_dense(mlp_gen):
    nz, n = mlp_gen.nz, mlp_gen.output_dim
    sizes = dict(batch=2, output_dim=n, nz=nz, itemsize=8, chunk=nz, activations=4 * n)
    assert choose_route(available=1, grad=True, **sizes).route == "dense"  # even when nothing fits
    with pytest.raises(GanProbeError, match="dense route only"):
        choose_route(available=None, grad=True, route="gram", **sizes)
    with pytest.raises(GanProbeError, match="unknown exact route"):
        choose_route(available=None, route="qr", **sizes)
    z = torch.randn(2, nz, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    op = JacobianOperator(mlp_gen.flat, z.requires_grad_())
    spec = exact_spectrum(op, grad=True)
    assert spec.route == "dense" and spec.half_logdet.requires_grad
    with pytest.raises(GanProbeError, match="dense route only"):
        exact_spectrum(op, grad=True, route="gram")
    with pytest.raises(GanProbeError, match="unknown exact route"):
        exact_spectrum(op, route="qr")


@pytest.mark.parametrize("geometry", ["euclidean", "sphere"])
def test_half_logdet_by_the_gram_route(mlp_gen, geometry):
    from gan_probe.spectral.logdet import half_logdet

    z = torch.randn(3, mlp_gen.nz, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    op = JacobianOperator(mlp_gen.flat, z)
    dense = half_logdet(op, RunPlan("exact", route="dense"), geometry=geometry)
    gram = half_logdet(op, RunPlan("exact", route="gram"), geometry=geometry)
    assert (dense.route, gram.route) == ("dense", "gram")
    assert torch.equal(dense.sphere, gram.sphere) and bool(gram.sphere.all()) == (geometry == "sphere")
    torch.testing.assert_close(gram.value, dense.value, rtol=1e-10, atol=1e-10)
    for key in ("lambda_max", "lambda_min", "condition"):
        torch.testing.assert_close(gram.stats[key], dense.stats[key], rtol=1e-8, atol=0)


def test_memory_estimate_counts_the_planned_route(dcgan_gen, monkeypatch):
    from gan_probe import device
    from gan_probe.analyses import memory
    from gan_probe.analyses.plan import plan_run

    n, nz = dcgan_gen.output_dim, dcgan_gen.nz
    act = memory.activation_elements(dcgan_gen)
    gram = gram_route_bytes(4, n, nz, 8, block=1, activations=act)
    monkeypatch.setattr(device, "available_bytes", lambda dev: gram)  # J does not fit, M by single columns does
    plan = plan_run(dcgan_gen, batch=4)
    est = memory.Estimate("loglik", dcgan_gen.device)
    memory.add_spectrum(est, dcgan_gen, plan, None)
    assert (plan.route, plan.block) == ("gram", 1)
    assert est.terms[0].bytes == gram and "Gram matrices" in est.terms[0].what
    monkeypatch.setattr(device, "available_bytes", lambda dev: 10**15)
    roomy = plan_run(dcgan_gen, batch=4)
    dense = memory.Estimate("loglik", dcgan_gen.device)
    memory.add_spectrum(dense, dcgan_gen, roomy, None)
    assert roomy.route == "dense" and "Jacobians" in dense.terms[0].what
    assert dense.terms[0].bytes == dense_route_bytes(4, n, nz, 8, chunk=roomy.chunk, activations=act)
    grad = memory.Estimate("ascend", dcgan_gen.device)
    memory.add_spectrum(grad, dcgan_gen, plan_run(dcgan_gen, batch=4, grad=True), None)  # the gradient: dense
    assert grad.terms[0].bytes > dense.terms[0].bytes and "Jacobians" in grad.terms[0].what


def test_method_auto_takes_an_estimator_when_exact_does_not_fit(mlp_gen, monkeypatch):
    from gan_probe import device
    from gan_probe.analyses.loglik import evaluate_loglik
    from gan_probe.analyses.plan import plan_run
    from gan_probe.spectral.plan import resolve_method

    assert resolve_method("auto", 5) == "exact"
    assert resolve_method("auto", 5, exact_fits=False) == "slq"
    assert resolve_method("exact", 5, exact_fits=False) == "exact"
    z = torch.randn(2, mlp_gen.nz, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    monkeypatch.setattr(device, "available_bytes", lambda dev: 10**15)
    assert plan_run(mlp_gen, batch=2, method="auto").memory.fits is True
    values = evaluate_loglik(mlp_gen, z, method="auto", geometry="euclidean")
    assert values.method == "exact" and values.exact_route == "dense"
    monkeypatch.setattr(device, "available_bytes", lambda dev: 1)
    plan = plan_run(mlp_gen, batch=2, method="auto")
    assert plan.memory.fits is False and plan.method == "slq"
    assert evaluate_loglik(mlp_gen, z, method="auto", geometry="euclidean").method == "slq"


def test_method_auto_chooses_by_estimated_cost():
    """docs/design.md §3.6: exact while EXACT_PRODUCT_COST[route] x nz (+ the factorisation) is at most
    AUTO_EXACT_COST_FACTOR x slq's steps x probes, and it fits; slq otherwise."""
    from gan_probe.spectral.estimators import SLQParams
    from gan_probe.spectral.plan import (
        AUTO_EXACT_COST_FACTOR,
        EXACT_PRODUCT_COST,
        exact_linalg_flops,
        method_costs,
        resolve_method,
    )

    budget = SLQParams().steps * SLQParams().probes
    edge = int(AUTO_EXACT_COST_FACTOR * budget / EXACT_PRODUCT_COST["dense"])  # the dense route's break-even nz
    assert resolve_method("auto", edge) == "exact"
    assert resolve_method("auto", edge + 1) == "slq"
    assert resolve_method("auto", 16384) == "slq"
    # the Gram route costs a JVP and a VJP per axis: the break-even nz halves
    gram_edge = int(AUTO_EXACT_COST_FACTOR * budget / EXACT_PRODUCT_COST["gram"])
    assert resolve_method("auto", gram_edge, route="gram") == "exact"
    assert resolve_method("auto", gram_edge + 1, route="gram") == "slq"
    # a larger slq budget moves the edge up: exact at 4096 once slq would spend 4096 products
    big = {"slq": SLQParams(steps=1024, probes=4)}
    assert resolve_method("auto", 4096, big) == "exact"
    assert resolve_method("auto", 4096, big, exact_fits=False) == "slq"  # memory overrides cost
    # the factorisation counts when a product's flops are known: a linear map's (4 N nz) makes exact dearer
    mid = {"slq": SLQParams(steps=100, probes=4)}
    costs = method_costs(700, mid, output_dim=700, product_flops=4 * 700 * 700)
    assert costs.exact == pytest.approx(0.5 * 700 + exact_linalg_flops("dense", 700, 700) / (4 * 700 * 700))
    assert costs.choice == "slq" and resolve_method("auto", 700, mid) == "exact"
    assert method_costs(700, mid, output_dim=700, product_flops=1e12).choice == "exact"  # a deep generator's
    with pytest.raises(GanProbeError, match="route"):
        method_costs(512, route="qr")
