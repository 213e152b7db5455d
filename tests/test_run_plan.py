"""One plan per run: the memory check, the route taken and ``--method auto`` read the same decision."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gan_probe import device, distributed
from gan_probe.analyses import memory
from gan_probe.analyses.loglik import GridParams, LoglikParams, run_loglik
from gan_probe.analyses.plan import agreed_available_bytes, plan_run
from gan_probe.errors import GanProbeError
from gan_probe.spectral.plan import PlanSizes, make_plan
from gan_probe.spectral.route import dense_route_bytes, gram_route_bytes
from tests.conftest import invoke, wrap


class WideHidden(torch.nn.Module):
    """nz 32 -> 5,000 tanh units -> 256 tanh outputs: about 10,500 activations per latent, 41 N, far beyond the
    4 N a route chosen without measuring them assumed."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, 5000), torch.nn.Tanh(), torch.nn.Linear(5000, 256), torch.nn.Tanh()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def test_the_route_taken_is_the_route_the_memory_check_counted(monkeypatch):
    """Before the run plan, the check counted the Gram route with the measured activations while the spectrum
    chose dense assuming 4 N activations: 640 kB holds J with 4 N activations in flight, not with these."""
    torch.manual_seed(0)
    gen = wrap(WideHidden().double(), 32)
    b, n, nz, act = 2, gen.output_dim, gen.nz, memory.activation_elements(gen)
    assert act > 40 * n
    available = 640_000
    gram = gram_route_bytes(b, n, nz, 8, block=1, activations=act)
    assert dense_route_bytes(b, n, nz, 8, chunk=1, activations=4 * n) < available  # the old guess: dense fits
    assert gram < available < dense_route_bytes(b, n, nz, 8, chunk=1, activations=act)  # measured: it does not
    monkeypatch.setattr(device, "available_bytes", lambda dev: available)
    result = run_loglik(gen, LoglikParams(num=2, batch_size=b, geometry="euclidean"))
    assert result.plan is not None and (result.plan.route, result.plan.chunk, result.plan.block) == ("gram", 1, 1)
    assert result.values.exact_route == "gram"
    counted = memory.Estimate("loglik", gen.device)
    memory.add_spectrum(counted, gen, result.plan, None)
    assert counted.terms[0].bytes == gram  # what the check counted is what ran
    ref = run_loglik(gen, LoglikParams(num=2, batch_size=b, geometry="euclidean", method="exact"))
    torch.testing.assert_close(result.values.half_logdet, ref.values.half_logdet, rtol=1e-9, atol=1e-9)


def test_ranks_plan_with_the_smallest_memory_any_rank_has(monkeypatch):
    monkeypatch.setattr(distributed, "exchange", lambda payload: [payload, None, 3 * 2**30])
    monkeypatch.setattr(device, "available_bytes", lambda dev: 5 * 2**30)
    assert agreed_available_bytes(torch.device("cpu")) == 3 * 2**30
    monkeypatch.setattr(distributed, "exchange", lambda payload: [None, None])
    assert agreed_available_bytes(torch.device("cpu")) is None


def _sizes(available: int | None, itemsize: int = 4) -> PlanSizes:
    return PlanSizes(nz=64, output_dim=3 * 32 * 32, batch=4, itemsize=itemsize, activations=20_000, available=available)


def test_auto_resolves_once_from_the_route_that_fits():
    roomy = make_plan(_sizes(10**12), method="auto")
    assert (roomy.method, roomy.route, roomy.requested) == ("exact", "dense", "auto")
    assert roomy.costs is not None and roomy.costs.exact_fits is True and roomy.choice_json()["method"] == "exact"
    tight = make_plan(_sizes(1), method="auto")
    assert tight.method == "slq" and tight.memory is not None and tight.memory.fits is False
    assert "fits in memory by neither route" in (tight.choice_note() or "")
    assert make_plan(_sizes(None), method="auto").costs.exact_fits is None  # type: ignore[union-attr]
    exact = make_plan(_sizes(1), method="exact")  # a method given is kept, whatever the memory
    assert exact.method == "exact" and exact.choice_json() is None and exact.choice_note() is None
    with pytest.raises(GanProbeError, match="unknown method"):
        make_plan(_sizes(None), method="qr")


def test_the_float64_recomputation_is_planned_for_8_byte_elements():
    sizes = _sizes(None)
    f32 = dense_route_bytes(4, sizes.output_dim, 64, 4, chunk=1, activations=sizes.activations)
    f64 = dense_route_bytes(4, sizes.output_dim, 64, 8, chunk=1, activations=sizes.activations)
    plan = make_plan(replace(sizes, available=(f32 + f64) // 2), method="exact")
    assert (plan.route, plan.chunk) == ("dense", 1)
    twin = plan.in_float64()
    assert twin.method == "exact" and twin.sizes is not None and twin.sizes.itemsize == 8
    assert twin.route == "gram"  # J in float64 does not fit where J in float32 did


def test_the_gradient_plan_is_dense_and_auto_heeds_its_memory(mlp_gen, monkeypatch):
    monkeypatch.setattr(device, "available_bytes", lambda dev: 1)
    plan = plan_run(mlp_gen, batch=2, method="auto", grad=True)
    assert plan.route == "dense" and plan.method == "slq"  # ascend --method auto: exact with J does not fit
    monkeypatch.setattr(device, "available_bytes", lambda dev: 10**15)
    assert plan_run(mlp_gen, batch=2, method="auto", grad=True).method == "exact"


def test_one_plan_serves_the_latents_and_the_grid(mlp_gen):
    result = run_loglik(mlp_gen, LoglikParams(num=2, method="auto", grid=GridParams(size=3), geometry="euclidean"))
    out = result.to_json()
    assert out["method_choice"]["method"] == out["method"] == "exact"
    assert out["summary"]["method"] == out["grid"]["summary"]["method"] == "exact"
    assert result.plan is not None and result.plan.sizes is not None and result.plan.sizes.batch == 9
    exact = run_loglik(mlp_gen, LoglikParams(num=2, method="exact", geometry="euclidean")).to_json()
    assert "method_choice" not in exact  # the report of any other method is as it was


def test_method_auto_choice_is_printed_and_recorded_once(runner, tiny_ckpt, tmp_path):
    import json

    result = invoke(runner, ["loglik", str(tiny_ckpt), "--n", "2", "--method", "auto", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "--method auto chose" in line]
    assert len(notes) == 1 and "chose exact" in notes[0]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["results"]["method_choice"]["method"] == report["results"]["method"] == "exact"
    assert report["parameters"]["method"] == "auto"
