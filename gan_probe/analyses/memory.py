"""Memory: each command's peak estimated from its sizes, and refused up front when it cannot fit.

A run that needs more memory than the machine has fails late and badly (a raw
allocator error after minutes, or the kernel's OOM killer), so every analysis
estimates its peak before any work and :func:`check_memory` refuses it with the
figure and the argument to change. The estimates count the dominant arrays, in
bytes, with

- ``n`` latents (``T`` trials, ``M`` latents for v_eff, ``K`` for ascend), ``b``
  the batch size (``min(batch_size, n)``), ``nz`` the latent size, ``N`` the
  output elements per latent (C * H * W), ``e`` the generator dtype's bytes (4
  or 8);
- ``A`` the activation elements of one forward pass per latent: the outputs of
  every leaf module, measured once per generator by forward hooks
  (:func:`activation_elements`; ``4 N`` when hooks cannot be set);
- ``c`` the latent axes in flight in one batched JVP (``--chunk-size``, default
  :func:`gan_probe.spectral.plan.choose_chunk`: on the CPU ``max(1, min(nz, 1024 // b))`` unless memory is
  short, on a GPU what its free memory holds).

The spectrum's working set is that of the run's plan (:func:`gan_probe.analyses.plan.plan_run`), so the
check counts what runs: its method, and for the exact method its route at its chunk and block (the
formulas are :mod:`gan_probe.spectral.route`'s). Working sets (on the generator's device):

- forward pass without gradients: ``b A e``
- exact spectrum, dense route: ``b N nz (e + 16) + 2 b c A e`` (J in the
  generator's dtype, its float64 copy and the QR workspace; primal and tangent
  activations of ``c`` axes), plus ``3 b nz^2 8`` for the eigenvectors; Gram route (taken when J does
  not fit and it needs less): ``2 b nz^2 8 + b P (N + nz)(e + 8) + (2 P + 1) b A e``
  (M = J^T J and the eigensolver's copy, one block's products and
  activations, ``P`` columns per block; ``3 b nz^2 8`` with the eigenvectors)
- exact Jacobian with the gradient (ascend): ``b N nz (e + 32) + 2 b nz A e``
  (also Q and Q R^-T in float64; the saved activations of all nz axes)
- a stochastic estimator: ``b P (2 A e + (S + 2)(N + nz) 8)`` with ``P`` probes
  and ``S`` Krylov vectors kept (slq: its steps; chebyshev and taylor: t; at most nz)
- a PNG grid of ``k`` images of H x W x C: ``png(k) = 17 k N + 5 k (H+2)(W+2) C``
  (the float64 and uint8 copies, the canvas and its 2x enlargement)

Per command (host arrays kept until the files are written, plus the working set):

- ``loglik``: ``16 n nz + 4 n N + png(n)`` and, with ``G = grid_size^2`` grid
  points, ``24 G nz + 4 G N + 64 G + png(G)``; working set: the exact Jacobian
  or the estimator at ``b``
- ``ascend``: ``8 (S + 1) K (nz + 5)`` (trajectories of ``S`` steps) ``+ 4 K F N + png(K F)``
  (``F`` frames); working set: the Jacobian with the gradient at ``b``
- ``eigvecs``: with ``I = T k (2 + s)`` perturbed images (``k`` eigenvectors
  shown, ``s`` traversal steps): ``16 T nz^2 + 24 I nz + 4 (T + I) N + 32 T k N
  + png(k s) + png(2 T (k + 1))``; working set: the exact spectrum with
  eigenvectors at ``b``, and a forward pass of ``max(b, 64)``
- ``veff``: ``8 M K nz`` (the random directions, drawn up front) ``+ 24 M nz``
  ``+ 24 b (nz + K) nz + 16 b (nz + K) + 8 b N`` (a batch's perturbed latents);
  working set: the exact spectrum with eigenvectors at ``b`` and ``F (A e + 16 N)``
  for the forward passes of ``F = 1024`` perturbed latents
- ``pag``: ``12 n N + 8 n nz`` (images and reconstructions) ``+ 16 P nz + 24 P``
  (``P`` prior draws ranked) ``+ 8 t N + png(2 min(n, 32)) + 2 png(t)`` (``t`` disagreement
  samples) ``+ 16 steps`` (the loss history); working set: ``3 b (A + N) e`` for the reversal's
  forward and backward passes
- ``sample``: ``4 n N + 8 n nz + png(n)``; working set: a forward pass at ``b``
- ``divergence`` (``n`` data points, ``h`` held out, ``M`` model samples, ``K`` importance draws, ``S``
  sigmas, ``R`` the encoder's activation elements per point, ``c`` the data chunk of ln p_s): ``16 n N``
  (the data in float64 and its split) ``+ 8 h N + 8 M (3 N + nz)`` (the noisy held-out points; the model
  samples z, G(z) and y, and G(z) once more while its chunks are gathered) ``+ 16 S (h + M)(nz + 4)`` (each
  sigma's terms and encoder means, both sides); working set, the largest of: the importance draws of a batch
  ``K b (A e + (e + 24) N) + b R e``, the encoders' validation passes (unbatched) ``max(M, h)(A + R) e``, a
  training, refinement or AIS batch (``b`` chains) ``3 b (A + N + R) e``, and ln p_s's block ``8 c N + 24 b c``

On the CPU the host arrays and the working set share the available RAM
(``MemAvailable`` of /proc/meminfo, or ``os.sysconf``, and the cgroup's limit
when lower); on a GPU the working set is held against
``torch.cuda.mem_get_info`` (plus the memory torch has cached but not used) and
the host arrays against RAM (:func:`gan_probe.device.available_bytes`). The
figures are estimates of the dominant terms, not bounds: a run below them can
still run out (it then fails with torch's own message, after the exact Jacobian
has been retried with fewer axes in flight).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_probe import device as machine
from gan_probe.device import format_bytes
from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.jacobian import DEFAULT_FORWARD_BUDGET
from gan_probe.spectral.plan import RunPlan, estimator_params
from gan_probe.spectral.route import element_bytes

_ACTIVATIONS: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


def activation_elements(gen: LoadedGenerator) -> int:
    """A: elements of every leaf module's output for one latent (at least the output size), measured once."""
    cached = _ACTIVATIONS.get(gen.module)
    if cached is not None:
        return cached
    count = [0]

    def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            count[0] += output.numel()

    handles = []
    try:
        for m in gen.module.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            gen(torch.full((2, gen.nz), gen.prior.center, dtype=gen.dtype, device=gen.device))
        value = max(count[0] // 2, gen.output_dim)
    except Exception:  # noqa: BLE001 - a module without hooks (TorchScript): a guess
        value = 4 * gen.output_dim
    finally:
        for h in handles:
            h.remove()
    _ACTIVATIONS[gen.module] = value
    return value


def png_bytes(gen: LoadedGenerator, count: int) -> int:
    """png(k): converting k images to uint8 and tiling them (scale 2)."""
    shape = gen.output_shape
    if len(shape) == 3:
        c, h, w = shape
    else:
        c, h, w = 1, 1, gen.output_dim
    return count * (17 * gen.output_dim + 5 * (h + 2) * (w + 2) * min(c, 3))


@dataclass(frozen=True)
class Term:
    """One array (or working set) of an estimate: its bytes, what it is, and the argument that sizes it."""

    bytes: int
    what: str
    param: str
    hint: str
    device: bool = False  # held on the generator's device (else on the host)


@dataclass
class Estimate:
    """A command's estimated peak, term by term."""

    command: str
    device: torch.device
    terms: list[Term] = field(default_factory=list)

    def add(self, nbytes: float, what: str, param: str, hint: str, *, device: bool = False) -> None:
        self.terms.append(Term(int(max(0.0, nbytes)), what, param, hint, device))

    def total(self, *, device: bool | None = None) -> int:
        return sum(t.bytes for t in self.terms if device is None or t.device == device)


def _element_bytes(gen: LoadedGenerator) -> int:
    return element_bytes(gen.dtype)


def _estimator_sizes(method: str, estimators: Mapping[str, Any] | None) -> tuple[int, int]:
    """(probes P, Krylov vectors kept S) of an estimator's parameters."""
    params = estimator_params(method, estimators)
    probes = int(getattr(params, "probes", getattr(params, "p", 1)))
    kept = int(getattr(params, "steps", getattr(params, "t", 1)))
    return probes, kept


def add_spectrum(est: Estimate, gen: LoadedGenerator, plan: RunPlan, estimators: Mapping[str, Any] | None) -> None:
    """The working set of 1/2 ln det M (or the exact spectrum) for one batch of latents, as the run's ``plan``
    takes it (:func:`gan_probe.analyses.plan.plan_run`): the exact method by its route (with the gradient
    or the eigenvectors when the plan takes them), an estimator at its probes and Krylov vectors."""
    if plan.memory is None or plan.sizes is None:
        raise ValueError("the memory of a run is counted from a plan made by plan_run (it has the sizes)")
    e, n_out, nz, act = _element_bytes(gen), gen.output_dim, gen.nz, plan.sizes.activations
    batch = plan.sizes.batch
    if plan.method == "exact":
        nbytes = plan.memory.bytes
        if plan.route == "gram":
            what = f"the Gram matrices J^T J of {batch} latents ({nz} x {nz} each)"
        else:
            what = f"the Jacobians of {batch} latents ({n_out} x {nz} each)"
    else:
        nbytes = _estimator_bytes(plan.method, estimators, batch, act, e, n_out, nz, grad=plan.grad)
        what = f"the {plan.method} products of {batch} latents x {_estimator_sizes(plan.method, estimators)[0]} probes"
    est.add(nbytes, what, "batch_size", "the batch size", device=True)


def _estimator_bytes(
    method: str, estimators: Mapping[str, Any] | None, batch: int, act: int, e: int, n_out: int, nz: int, *, grad: bool
) -> int:
    probes, kept = _estimator_sizes(method, estimators)
    kept = min(kept, nz)  # Golub-Kahan stops at nz steps (gan_probe.spectral.estimators.lanczos.golub_kahan)
    return batch * probes * (2 * act * e + (kept + 2) * (n_out + nz) * 8) * (2 if grad else 1)


def check_memory(est: Estimate, *, available: Mapping[str, int | None] | None = None) -> None:
    """Refuse the run when its estimated peak exceeds the memory available, naming the figure and the
    largest term's argument. ``available`` ({"device": bytes, "host": bytes}) overrides the measurement."""
    on_gpu = est.device.type != "cpu"
    pools = [("host", False)] + ([("device", True)] if on_gpu else [])
    for pool, on_device in pools:
        terms = [t for t in est.terms if t.device == on_device or not on_gpu]
        need = sum(t.bytes for t in terms)
        if available is not None and pool in available:
            have = available[pool]
        else:
            have = machine.available_bytes(est.device if on_device else torch.device("cpu"))
        if have is None or need <= have or not terms:
            continue
        big = max(terms, key=lambda t: t.bytes)
        where = str(est.device) if on_device else "the host (RAM)"
        raise GanProbeError(
            f"{est.command} would need about {format_bytes(need)} of memory on {where}, "
            f"{format_bytes(big.bytes)} of it for {big.what}, but {format_bytes(have)} is available; "
            f"lower {big.hint}",
            param=big.param,
        )


# --------------------------------------------------------------------------- per command


def loglik_memory(
    gen: LoadedGenerator,
    plan: RunPlan,
    *,
    num: int,
    estimators: Mapping[str, Any] | None,
    grid_size: int | None,
    latents_given: bool = False,
) -> Estimate:
    """``plan``: the run's, for batches of ``min(batch_size, max(num, grid_size^2))`` latents."""
    est = Estimate("loglik", gen.device)
    n_out, nz = gen.output_dim, gen.nz
    param, hint = (
        ("latents", "the number of latents in the file") if latents_given else ("num", "the number of latents")
    )
    est.add(16 * num * nz + 4 * num * n_out + png_bytes(gen, num), f"{num} latents and their images", param, hint)
    if grid_size is not None:
        points = grid_size**2
        est.add(
            24 * points * nz + 4 * points * n_out + 64 * points + png_bytes(gen, points),
            f"the grid's {points} points and their images",
            "grid.size",
            "the grid size",
        )
    add_spectrum(est, gen, plan, estimators)
    return est


def ascend_memory(
    gen: LoadedGenerator,
    plan: RunPlan,
    *,
    num: int,
    steps: int,
    frames: int,
    estimators: Mapping[str, Any] | None,
) -> Estimate:
    """``plan``: the run's, with the gradient, for batches of ``min(batch_size, num)`` latents."""
    est = Estimate("ascend", gen.device)
    n_out, nz = gen.output_dim, gen.nz
    est.add(
        8 * (steps + 1) * num * (nz + 5),
        f"the trajectories of {num} latents over {steps} steps",
        "steps",
        "the number of steps",
    )
    count = num * min(frames, steps + 1)
    est.add(
        4 * count * n_out + png_bytes(gen, count), f"the {count} frames of the strips", "num", "the number of latents"
    )
    add_spectrum(est, gen, plan, estimators)
    return est


def eigvecs_memory(
    gen: LoadedGenerator, plan: RunPlan, *, num: int, top: int, traversal_steps: int, batch_size: int
) -> Estimate:
    """``plan``: the run's, with the eigenvectors, for batches of ``min(batch_size, num)`` latents."""
    est = Estimate("eigvecs", gen.device)
    n_out, nz = gen.output_dim, gen.nz
    est.add(16 * num * nz * nz, f"the eigenvectors of {num} trials", "num", "the number of trial latents")
    images = num * top * (2 + traversal_steps)
    by_steps = traversal_steps > 2
    est.add(
        24 * images * nz
        + 4 * (num + images) * n_out
        + 32 * num * top * n_out
        + png_bytes(gen, top * traversal_steps)
        + png_bytes(gen, 2 * num * (top + 1)),
        f"{images} perturbed and traversal images",
        "traversal_steps" if by_steps else "num",
        "the traversal steps" if by_steps else "the number of trial latents",
    )
    add_spectrum(est, gen, plan, None)
    est.add(
        max(batch_size, 64) * activation_elements(gen) * _element_bytes(gen),
        "the rendering batch",
        "batch_size",
        "the batch size",
        device=True,
    )
    return est


def veff_memory(gen: LoadedGenerator, plan: RunPlan, *, num: int, num_directions: int, batch_size: int) -> Estimate:
    """``plan``: the run's, with the eigenvectors, for batches of ``min(batch_size, num)`` latents."""
    est = Estimate("veff", gen.device)
    n_out, nz, k = gen.output_dim, gen.nz, num_directions
    b = min(batch_size, num)
    est.add(8 * num * k * nz, f"{num} x {k} random directions", "num_directions", "the number of random directions")
    est.add(24 * num * nz, "the eigenvalues and ratios", "num", "the number of latents")
    est.add(
        24 * b * (nz + k) * nz + 16 * b * (nz + k) + 8 * b * n_out,
        f"the {b * (nz + k)} perturbed latents of a batch",
        "batch_size",
        "the batch size",
    )
    add_spectrum(est, gen, plan, None)
    act, e = activation_elements(gen), _element_bytes(gen)
    est.add(
        DEFAULT_FORWARD_BUDGET * (act * e + 16 * n_out),
        "the forward passes of perturbed latents",
        "batch_size",
        "the batch size",
        device=True,
    )
    return est


def pag_memory(
    gen: LoadedGenerator, *, num_images: int, batch_size: int, num_prior_samples: int, num_top: int, steps: int = 0
) -> Estimate:
    est = Estimate("pag", gen.device)
    est.add(16 * steps, f"the loss history of {steps} steps", "steps", "the number of steps")
    n_out, nz = gen.output_dim, gen.nz
    est.add(
        12 * num_images * n_out + 8 * num_images * nz,
        f"{num_images} images and their reconstructions",
        "limit",
        "the number of images",
    )
    est.add(
        16 * num_prior_samples * nz + 24 * num_prior_samples,
        f"{num_prior_samples} prior draws",
        "num_prior_samples",
        "the number of prior draws",
    )
    est.add(
        8 * num_top * n_out + png_bytes(gen, 2 * min(num_images, 32)) + 2 * png_bytes(gen, num_top),
        f"{num_top} disagreement samples",
        "num_top",
        "the number of disagreement samples",
    )
    b, act, e = min(batch_size, num_images), activation_elements(gen), _element_bytes(gen)
    est.add(
        3 * b * (act + n_out) * e, f"the reversal of {b} images at once", "batch_size", "the batch size", device=True
    )
    return est


def sample_memory(gen: LoadedGenerator, *, num: int, batch_size: int) -> Estimate:
    est = Estimate("sample", gen.device)
    est.add(
        4 * num * gen.output_dim + 8 * num * gen.nz + png_bytes(gen, num),
        f"{num} samples",
        "num",
        "the number of samples",
    )
    est.add(
        min(batch_size, num) * activation_elements(gen) * _element_bytes(gen),
        "a forward pass",
        "batch_size",
        "the batch size",
        device=True,
    )
    return est


def divergence_memory(
    gen: LoadedGenerator,
    *,
    num_data: int,
    num_heldout: int,
    num_model_samples: int,
    importance: int,
    batch_size: int,
    ais: bool,
    num_sigmas: int,
    chunk: int,
    encoder_activations: int,
) -> Estimate:
    """``encoder_activations``: R, :meth:`gan_probe.analyses.divergence.GaussianEncoder.activation_elements`.
    The device's working sets come one after another, so only the largest is counted."""
    est = Estimate("divergence", gen.device)
    n_out, nz, m, h = gen.output_dim, gen.nz, num_model_samples, num_heldout
    act, enc, e = activation_elements(gen), encoder_activations, _element_bytes(gen)
    b = min(batch_size, max(m, h))
    est.add(16 * num_data * n_out + 8 * h * n_out, f"{num_data} data points", "limit", "the number of data points")
    est.add(
        8 * m * (3 * n_out + nz) + 16 * num_sigmas * (h + m) * (nz + 4),
        f"{m} model samples",
        "model_samples",
        "the number of model samples",
    )
    working = [
        (
            importance * b * (act * e + (e + 24) * n_out) + b * enc * e,
            f"{importance} importance draws for each of {b} points",
            "importance",
            "the number of importance draws K or the batch size",
        ),
        (
            max(m, h) * (act + enc) * e,
            f"the encoders' validation on {max(m, h)} points at once",
            "model_samples" if m >= h else "heldout",
            "the number of model samples" if m >= h else "the held-out fraction",
        ),
        (
            3 * b * (act + n_out + enc) * e,
            f"the {'AIS chains' if ais else 'encoder training'} of {b} points at once",
            "batch_size",
            "the batch size",
        ),
        (
            8 * chunk * n_out + 24 * b * chunk,
            f"ln p_s over blocks of {chunk} data points",
            "batch_size",
            "the batch size",
        ),
    ]
    nbytes, what, param, hint = max(working, key=lambda w: w[0])
    est.add(nbytes, what, param, hint, device=True)
    return est


__all__ = [
    "Estimate",
    "Term",
    "activation_elements",
    "add_spectrum",
    "ascend_memory",
    "check_memory",
    "divergence_memory",
    "eigvecs_memory",
    "format_bytes",
    "loglik_memory",
    "pag_memory",
    "png_bytes",
    "sample_memory",
    "veff_memory",
]
