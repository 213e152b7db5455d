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
  :func:`auto_chunk_size`: on the CPU ``max(1, min(nz, 1024 // b))`` unless memory is short, on a GPU
  what its free memory holds).

Working sets (on the generator's device):

- forward pass without gradients: ``b A e``
- exact Jacobian and spectrum: ``b N nz (e + 16) + 2 b c A e`` (J in the
  generator's dtype, its float64 copy and the QR workspace; primal and tangent
  activations of ``c`` axes), plus ``3 b nz^2 8`` for the eigenvectors; or,
  when smaller, the Gram route's ``2 b nz^2 8 + b (N + nz)(e + 8) + 3 b A e``
  (M = J^T J and the eigensolver's copy, one column's products and
  activations; ``3 b nz^2 8`` with the eigenvectors), which the exact method
  takes when J does not fit (:func:`gan_probe.spectral.gram.choose_route`)
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

On the CPU the host arrays and the working set share the available RAM
(``MemAvailable`` of /proc/meminfo, or ``os.sysconf``, and the cgroup's limit
when lower); on a GPU the working set is held against
``torch.cuda.mem_get_info`` (plus the memory torch has cached but not used) and
the host arrays against RAM. The figures are estimates of the dominant terms,
not bounds: a run below them can still run out (it then fails with torch's own
message, after the exact Jacobian has been retried with fewer axes in flight).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gan_probe.errors import GanProbeError
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.spectral.jacobian import DEFAULT_FORWARD_BUDGET, default_chunk_size

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
    return torch.empty((), dtype=gen.dtype).element_size()


def _estimator_sizes(method: str, estimators: Mapping[str, Any] | None) -> tuple[int, int]:
    """(probes P, Krylov vectors kept S) of an estimator's parameters."""
    from gan_probe.spectral.logdet import estimator_params

    params = estimator_params(method, estimators)
    probes = int(getattr(params, "probes", getattr(params, "p", 1)))
    kept = int(getattr(params, "steps", getattr(params, "t", 1)))
    return probes, kept


#: the share of free memory the tangents of one chunk may take (J and the QR workspace come first)
CHUNK_MEMORY_SHARE = 0.5


def auto_chunk_size(gen: LoadedGenerator, batch: int) -> int:
    """Latent axes per batched JVP call for ``batch`` latents when ``--chunk-size`` is not given.

    The axes whose primal and tangent activations (``2 b c A e``, docs/design.md §9) fit in
    CHUNK_MEMORY_SHARE of the free memory left after J and its float64 QR copy: on a GPU as many as fit
    (more axes in flight, more throughput, up to nz); on the CPU at most the fixed forward budget of
    :func:`gan_probe.spectral.jacobian.default_chunk_size` (more measured no faster there), fewer when
    memory is short (a StyleGAN2's activations at 1,024 axes take tens of GB). At least 1; the default
    when the free memory cannot be told.
    """
    nz = gen.nz
    default = default_chunk_size(batch, nz)
    have = available_bytes(gen.device)
    if have is None:
        return default
    e, n_out, act = _element_bytes(gen), gen.output_dim, activation_elements(gen)
    left = have - batch * n_out * nz * (e + 16)
    per_axis = 2 * batch * act * e
    fits = int(CHUNK_MEMORY_SHARE * left // per_axis) if left > 0 else 0
    return max(1, min(nz if gen.device.type == "cuda" else default, fits))


def exact_spectrum_bytes(
    gen: LoadedGenerator, batch: int, *, chunk_size: int | None = None, vectors: bool = False
) -> tuple[int, str]:
    """(bytes, route) of the exact spectrum of one batch without the gradient: the smaller of the dense
    route's and the Gram route's working sets (one column per block), which the exact method falls back to
    when J does not fit (:func:`gan_probe.spectral.gram.choose_route`)."""
    from gan_probe.spectral.gram import dense_route_bytes, gram_route_bytes

    e, n_out, nz, act = _element_bytes(gen), gen.output_dim, gen.nz, activation_elements(gen)
    chunk = min(nz, chunk_size) if chunk_size else auto_chunk_size(gen, batch)
    dense = dense_route_bytes(batch, n_out, nz, e, chunk=chunk, activations=act, vectors=vectors)
    gram = gram_route_bytes(batch, n_out, nz, e, block=1, activations=act, vectors=vectors)
    return (gram, "gram") if gram < dense else (dense, "dense")


def exact_route(gen: LoadedGenerator, batch: int, *, chunk_size: int | None = None) -> str:
    """The exact route one batch will take, as :func:`gan_probe.spectral.gram.choose_route` picks it: ``dense``
    when J and its working set fit in the free memory (or the memory cannot be told), else ``gram``."""
    from gan_probe.spectral.gram import dense_route_bytes

    have = available_bytes(gen.device)
    chunk = min(gen.nz, chunk_size) if chunk_size else auto_chunk_size(gen, batch)
    e, act = _element_bytes(gen), activation_elements(gen)
    dense = dense_route_bytes(batch, gen.output_dim, gen.nz, e, chunk=chunk, activations=act)
    return "dense" if have is None or dense <= have else "gram"


def exact_fits(gen: LoadedGenerator, batch: int, *, chunk_size: int | None = None) -> bool | None:
    """Whether the exact spectrum of one batch fits in the memory available on the generator's device by
    either route (None when the memory cannot be told): ``--method auto`` takes an estimator when it does not."""
    have = available_bytes(gen.device)
    if have is None:
        return None
    return exact_spectrum_bytes(gen, batch, chunk_size=chunk_size)[0] <= have


def add_spectrum(
    est: Estimate,
    gen: LoadedGenerator,
    batch: int,
    *,
    method: str = "exact",
    estimators: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    grad: bool = False,
    vectors: bool = False,
) -> None:
    """The working set of 1/2 ln det M (or the exact spectrum) for one batch of latents. ``auto`` without the
    gradient counts the smaller of exact's and slq's (the method it resolves to when exact does not fit)."""
    e, n_out, nz, act = _element_bytes(gen), gen.output_dim, gen.nz, activation_elements(gen)
    hint = "the batch size"
    if method in ("exact", "auto") and grad:
        nbytes = batch * n_out * nz * (e + 32) + 2 * batch * nz * act * e
        if vectors:
            nbytes += 3 * batch * nz * nz * 8
        what = f"the Jacobians of {batch} latents ({n_out} x {nz} each)"
    elif method in ("exact", "auto"):
        nbytes, route = exact_spectrum_bytes(gen, batch, chunk_size=chunk_size, vectors=vectors)
        if route == "gram":
            what = f"the Gram matrices J^T J of {batch} latents ({nz} x {nz} each)"
        else:
            what = f"the Jacobians of {batch} latents ({n_out} x {nz} each)"
        if method == "auto":
            slq = _estimator_bytes("slq", estimators, batch, act, e, n_out, nz, grad=False)
            if slq < nbytes:
                nbytes, what = (
                    slq,
                    f"the slq products of {batch} latents x {_estimator_sizes('slq', estimators)[0]} probes",
                )
    else:
        nbytes = _estimator_bytes(method, estimators, batch, act, e, n_out, nz, grad=grad)
        what = f"the {method} products of {batch} latents x {_estimator_sizes(method, estimators)[0]} probes"
    est.add(nbytes, what, "batch_size", hint, device=True)


def _estimator_bytes(
    method: str, estimators: Mapping[str, Any] | None, batch: int, act: int, e: int, n_out: int, nz: int, *, grad: bool
) -> int:
    probes, kept = _estimator_sizes(method, estimators)
    kept = min(kept, nz)  # Golub-Kahan stops at nz steps (gan_probe.spectral.estimators.lanczos.golub_kahan)
    return batch * probes * (2 * act * e + (kept + 2) * (n_out + nz) * 8) * (2 if grad else 1)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (a GPU) or of the host (the CPU); None when it cannot be told."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(free + max(0, cached))
        except Exception:  # noqa: BLE001 - no figure: no check
            return None
    if device.type != "cpu":
        return None
    return host_available_bytes()


def host_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (else os.sysconf), capped by the cgroup's memory limit."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_room() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), or None when unlimited or unknown."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        text = (base / "memory.max").read_text().strip()
        if text == "max":
            return None
        return max(0, int(text) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError, IndexError):
        return None


def format_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"


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
            have = available_bytes(est.device if on_device else torch.device("cpu"))
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
    *,
    num: int,
    batch_size: int,
    method: str,
    estimators: Mapping[str, Any] | None,
    chunk_size: int | None,
    grid_size: int | None,
    latents_given: bool = False,
) -> Estimate:
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
    add_spectrum(
        est,
        gen,
        min(batch_size, max(num, grid_size**2 if grid_size else 1)),
        method=method,
        estimators=estimators,
        chunk_size=chunk_size,
    )
    return est


def ascend_memory(
    gen: LoadedGenerator,
    *,
    num: int,
    steps: int,
    frames: int,
    batch_size: int,
    method: str,
    estimators: Mapping[str, Any] | None,
) -> Estimate:
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
    add_spectrum(est, gen, min(batch_size, num), method=method, estimators=estimators, grad=True)
    return est


def eigvecs_memory(
    gen: LoadedGenerator, *, num: int, top: int, traversal_steps: int, batch_size: int, chunk_size: int | None
) -> Estimate:
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
    add_spectrum(est, gen, min(batch_size, num), chunk_size=chunk_size, vectors=True)
    est.add(
        max(batch_size, 64) * activation_elements(gen) * _element_bytes(gen),
        "the rendering batch",
        "batch_size",
        "the batch size",
        device=True,
    )
    return est


def veff_memory(
    gen: LoadedGenerator, *, num: int, num_directions: int, batch_size: int, chunk_size: int | None
) -> Estimate:
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
    add_spectrum(est, gen, b, chunk_size=chunk_size, vectors=True)
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


__all__ = [
    "Estimate",
    "Term",
    "activation_elements",
    "add_spectrum",
    "ascend_memory",
    "available_bytes",
    "check_memory",
    "eigvecs_memory",
    "exact_fits",
    "exact_spectrum_bytes",
    "format_bytes",
    "host_available_bytes",
    "loglik_memory",
    "pag_memory",
    "png_bytes",
    "sample_memory",
    "veff_memory",
]
