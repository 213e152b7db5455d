"""Memory: a run that would need more than the machine has is refused up front with the figure and the flag
that lowers it (the estimates follow the sizes); an out-of-memory error inside the Jacobian retries with fewer
axes at a time, and one elsewhere keeps torch's text; chunked runs give the numbers of unchunked ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_probe import device
from gan_probe.analyses.common import load_latents
from gan_probe.errors import CheckpointError, DataError
from gan_probe.models import load_generator
from tests.conftest import assert_refused, invoke

NZ = 8  # tiny_ckpt's


# --------------------------------------------------------------------------- refused up front


def test_memory_refusal_names_the_figure_and_the_flag(tiny_ckpt, runner, tmp_path):
    # within the bound on counts (gan_probe.limits), beyond any machine's memory
    out = tmp_path / "out"
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "1000000000", "--out", out])
    line = assert_refused(result, "1000000000 latents and their images", out=out)
    assert line.startswith("error: loglik would need about ") and "TiB" in line
    assert "1000000000 latents and their images" in line and line.endswith("(--n)")


def test_memory_estimates_fit_the_defaults_and_follow_the_sizes(tiny_ckpt):
    from gan_probe.analyses import memory
    from gan_probe.analyses.plan import plan_run
    from gan_probe.device import host_available_bytes

    gen = load_generator(tiny_ckpt)
    est = memory.loglik_memory(gen, plan_run(gen, batch=16), num=16, estimators=None, grid_size=15)
    assert 0 < est.total() < 512 * 2**20
    memory.check_memory(est)  # fits

    def directions(k: int) -> int:
        est = memory.veff_memory(gen, plan_run(gen, batch=16, vectors=True), num=64, num_directions=k, batch_size=16)
        return sum(t.bytes for t in est.terms if t.param == "num_directions")

    assert directions(3200) == 100 * directions(32) == 100 * 8 * 64 * 32 * NZ
    with pytest.raises(memory.GanProbeError, match="lower the batch size") as exc:
        memory.check_memory(
            memory.ascend_memory(gen, plan_run(gen, batch=4, grad=True), num=4, steps=2, frames=2, estimators=None),
            available={"host": 1000},
        )
    assert exc.value.param == "batch_size"
    assert memory.activation_elements(gen) >= gen.output_dim
    assert host_available_bytes() is None or host_available_bytes() > 0


def test_divergence_memory_fits_the_defaults_and_follows_the_samples_and_draws(tiny_ckpt):
    from gan_probe.analyses import memory
    from gan_probe.analyses.divergence import DivergenceParams, GaussianEncoder

    gen = load_generator(tiny_ckpt)
    p = DivergenceParams()
    n_out, nz, e = gen.output_dim, gen.nz, 4
    act, enc = memory.activation_elements(gen), GaussianEncoder.activation_elements(gen.output_shape, gen.nz)

    def estimate(**change: int) -> memory.Estimate:
        sizes = {"num_model_samples": p.num_model_samples, "importance": p.importance, "batch_size": p.batch_size}
        sizes.update(change)
        return memory.divergence_memory(
            gen, num_data=1000, num_heldout=250, ais=True, num_sigmas=2, chunk=p.chunk, encoder_activations=enc, **sizes
        )

    memory.check_memory(estimate())  # the defaults fit
    assert 0 < estimate().total() < 2**30

    def by(est: memory.Estimate, param: str) -> int:
        return sum(t.bytes for t in est.terms if t.param == param)

    m = 10**7  # the samples on the host and, past the held-out points, the encoders' unbatched validation
    assert by(estimate(num_model_samples=m), "model_samples") == (
        8 * m * (3 * n_out + nz) + 16 * 2 * (250 + m) * (nz + 4) + m * (act + enc) * e
    )
    k, b = 10**5, p.batch_size  # the importance draws of one batch
    assert by(estimate(importance=k), "importance") == k * b * (act * e + (e + 24) * n_out) + b * enc * e
    with pytest.raises(
        memory.GanProbeError, match=rf"importance draws for each of {b} points.*lower the number"
    ) as exc:
        memory.check_memory(estimate(importance=k), available={"host": 2**30})
    assert exc.value.param == "importance"


@pytest.mark.parametrize("output_shape", [(1, 32, 32), (3, 8, 12), (16,)])
def test_divergence_encoder_activations_are_its_layer_outputs(output_shape):
    """R of the memory estimate: every layer's output for one y (Flatten is a view, not counted)."""
    from gan_probe.analyses.divergence import GaussianEncoder

    encoder = GaussianEncoder(output_shape, 5)
    count = [0]
    for module in encoder.modules():
        if next(module.children(), None) is None and not isinstance(module, torch.nn.Flatten):
            module.register_forward_hook(lambda mod, inputs, output: count.__setitem__(0, count[0] + output.numel()))
    encoder(torch.zeros(1, int(np.prod(output_shape))))
    assert count[0] == GaussianEncoder.activation_elements(output_shape, 5)


def test_a_latents_file_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "z.npy", np.zeros((64, NZ)))
    monkeypatch.setattr(device, "cgroup_room", lambda: 1000)  # a cgroup with 1000 B to spare caps the free memory
    with pytest.raises(DataError, match=r"would take 4\.0 KiB as float64, more than the 1000 B") as info:
        load_latents(tmp_path / "z.npy", NZ)
    assert info.value.param == "latents"


def test_a_checkpoint_beyond_the_memory_available_is_refused(tiny_ckpt, monkeypatch):
    monkeypatch.setattr(device, "cgroup_room", lambda: 1000)  # a cgroup with 1000 B to spare caps the free memory
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: its tensors would take at least .* 1000 B"):
        load_generator(tiny_ckpt)


# --------------------------------------------------------------------------- out of memory


def test_out_of_memory_in_the_jacobian_retries_with_fewer_axes(tiny_ckpt, monkeypatch):
    import gan_probe.spectral.operator as operator_module
    from gan_probe.spectral.route import exact_spectrum

    gen = load_generator(tiny_ckpt, dtype=torch.float64)
    real, chunks = operator_module.jacobian, []

    def tight(fn, z, *, chunk_size=None, routes=None):
        chunks.append(chunk_size)
        if chunk_size is None or chunk_size > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(fn, z, chunk_size=chunk_size, routes=routes)

    monkeypatch.setattr(operator_module, "jacobian", tight)
    z = torch.randn(3, NZ, dtype=torch.float64)
    spec = exact_spectrum(operator_module.JacobianOperator(gen.flat, z))
    assert chunks == [None, 4, 2]
    monkeypatch.setattr(operator_module, "jacobian", real)
    ref = exact_spectrum(operator_module.JacobianOperator(gen.flat, z))
    torch.testing.assert_close(spec.half_logdet, ref.half_logdet)


def test_out_of_memory_keeps_torchs_text(tiny_ckpt, runner, tmp_path, monkeypatch):
    import gan_probe.analyses.loglik as loglik_module

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)")

    monkeypatch.setattr(loglik_module, "evaluate_loglik", oom)
    out = tmp_path / "oom"
    result = invoke(runner, ["loglik", tiny_ckpt, "--n", "2", "--out", out])
    line = assert_refused(result, "error: out of memory: ", out=out)
    assert line.startswith("error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "--batch-size" in line and "--device cpu" in line
    assert not out.exists()


# --------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_ascend_in_chunks_is_the_unchunked_ascent(tiny_ckpt, optimizer):
    import gan_probe

    gen = load_generator(tiny_ckpt, dtype=torch.float64)
    whole = gan_probe.ascend(gen, n=5, steps=3, lr=0.1, optimizer=optimizer, batch_size=16)
    chunked = gan_probe.ascend(gen, n=5, steps=3, lr=0.1, optimizer=optimizer, batch_size=2)
    torch.testing.assert_close(chunked.z, whole.z, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked.loglik, whole.loglik, rtol=0, atol=1e-9)


def test_veff_in_chunks_gives_the_same_ratios(tiny_ckpt):
    import gan_probe

    gen = load_generator(tiny_ckpt, dtype=torch.float64)
    a = gan_probe.veff(gen, n=3, k=5)
    from gan_probe.analyses.veff import VeffParams, run_veff

    b = run_veff(gen, VeffParams(num=3, num_directions=5, forward_budget=4))
    torch.testing.assert_close(a.delta, b.delta, rtol=1e-12, atol=0)
