"""Results into files: every PNG and array a command writes, one writer per result type.

Analyses return result objects and write nothing; :func:`write_outputs` turns
a result into files inside an :class:`~gan_probe.report.files.OutputDir`
(staged, then committed atomically by the caller). ``report.json`` itself is
:func:`gan_probe.report.report.build_report`.
"""

from __future__ import annotations

from functools import singledispatch
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_probe.analyses.ascend import AscendResult
from gan_probe.analyses.common import latent_arrays
from gan_probe.analyses.divergence import DivergenceResult
from gan_probe.analyses.eigvecs import EigvecsResult
from gan_probe.analyses.loglik import LoglikResult
from gan_probe.analyses.pag import NUM_SHOWN, SHOWN_PER_ROW, PagResult
from gan_probe.analyses.prior import PriorResult
from gan_probe.analyses.veff import VeffResult
from gan_probe.models.checkpoint import LoadedGenerator
from gan_probe.models.prior_net import save_prior_net
from gan_probe.report.files import OutputDir
from gan_probe.report.images import save_grid
from gan_probe.report.plots import (
    plot_ascent,
    plot_code_projections,
    plot_divergence_vs_sigma,
    plot_encoder_training,
    plot_log_spectra,
    plot_loglik_contour,
    plot_pag_diagnostics,
    plot_prior_training,
    plot_veff_curve,
)


def save_npz(path: Path, **arrays: Any) -> None:
    """A compressed .npz of named arrays."""
    np.savez_compressed(path, **arrays)


@singledispatch
def write_outputs(result: object, gen: LoadedGenerator, out: OutputDir) -> None:
    """Write the files of ``result`` (a command's result object) into ``out``."""
    raise TypeError(f"no writer for {type(result).__name__}")


def write_samples(
    images: torch.Tensor, z: torch.Tensor, gen: LoadedGenerator, out: OutputDir, **extra: np.ndarray
) -> None:
    """samples.png and samples.npz (the latents, named ``z``, ``w`` or ``w_plus`` after the space, the raw
    ``images`` in the generator's own units, and ``extra`` arrays: e.g. ``seeds`` and the ``z`` they drew)."""
    save_grid(out.path("samples.png"), images, value_range=gen.output_range, scale=2)
    save_npz(out.path("samples.npz"), **extra, **latent_arrays(gen, z), images=images.float().numpy())


@write_outputs.register
def _write_loglik(result: LoglikResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """samples.png, and with a grid: grid_samples.png, grid_loglik.png, grid.npz."""
    save_grid(out.path("samples.png"), result.images, value_range=gen.output_range, scale=2)
    if result.grid is None:
        return
    g = result.grid
    size = g.coords.numel()
    # images row-major with b increasing downwards; flip so b grows upwards as in the contour plot
    imgs = (
        result.grid.images.reshape(size, size, *result.grid.images.shape[1:])
        .flip(0)
        .reshape(size * size, *result.grid.images.shape[1:])
    )
    save_grid(out.path("grid_samples.png"), imgs, value_range=gen.output_range, ncol=size, scale=2)
    labels = (
        (f"z[{g.dims[0]}]", f"z[{g.dims[1]}]")
        if g.dims is not None
        else ("u1 (random direction)", "u2 (random direction)")
    )
    plot_loglik_contour(
        out.path("grid_loglik.png"),
        g.coords.numpy() + (float(g.center @ g.basis[0]) if g.dims is not None else 0.0),
        g.coords.numpy() + (float(g.center @ g.basis[1]) if g.dims is not None else 0.0),
        g.values.loglik.reshape(size, size).numpy(),
        labels=labels,
        title=f"ln Q(G(z)) over a latent plane [nats], {gen.arch} nz={gen.nz}",
    )
    save_npz(
        out.path("grid.npz"),
        z=g.values.z.numpy(),
        coords=g.coords.numpy(),
        center=g.center.numpy(),
        basis=g.basis.numpy(),
        loglik=g.values.loglik.reshape(size, size).numpy(),
        half_logdet=g.values.half_logdet.reshape(size, size).numpy(),
    )


@write_outputs.register
def _write_ascend(result: AscendResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """strips.png (a row per latent), strip_KKK.png, ascent.png, latents.npz (key z), trajectories.npz."""
    assert result.frames is not None
    ncol = len(result.frame_steps)
    save_grid(out.path("strips.png"), result.frames, value_range=gen.output_range, ncol=ncol, scale=2)
    for k in range(result.z.shape[1]):
        save_grid(
            out.path(f"strip_{k:03d}.png"),
            result.frames[k * ncol : (k + 1) * ncol],
            value_range=gen.output_range,
            ncol=ncol,
            scale=2,
        )
    plot_ascent(
        out.path("ascent.png"),
        result.loglik.numpy(),
        result.condition.numpy(),
        title=f"likelihood ascent ({result.method} gradient, {result.params.optimizer}, lr {result.params.lr:g})",
    )
    save_npz(out.path("latents.npz"), **latent_arrays(gen, result.z[-1]))
    save_npz(
        out.path("trajectories.npz"),
        z=result.z.numpy(),
        loglik=result.loglik.numpy(),
        half_logdet=result.half_logdet.numpy(),
        lambda_min=result.lambda_min.numpy(),
        lambda_max=result.lambda_max.numpy(),
        condition=result.condition.numpy(),
        frame_steps=np.asarray(result.frame_steps),
    )


@write_outputs.register
def _write_eigvecs(result: EigvecsResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """spectra.png, perturbations.png (all trials), trial_TT.png, traversal_TT.png and eigvecs.npz."""
    num, top = result.z.shape[0], result.top
    plot_log_spectra(
        out.path("spectra.png"),
        result.eigenvalues.numpy(),
        title=f"Spectrum of M = J^T J at {num} trial latents ({gen.arch}, nz={gen.nz})",
    )
    rows = []
    for t in range(num):
        orig = result.originals[t : t + 1]
        grid = torch.cat([orig, result.random_images[t], orig, result.eigen_images[t]])
        save_grid(out.path(f"trial_{t:02d}.png"), grid, value_range=gen.output_range, ncol=top + 1, scale=2)
        trav = result.traversal_images[t].reshape(-1, *result.originals.shape[1:])
        save_grid(
            out.path(f"traversal_{t:02d}.png"),
            trav,
            value_range=gen.output_range,
            ncol=result.params.traversal_steps,
            scale=2,
        )
        rows.append(grid)
    save_grid(out.path("perturbations.png"), torch.cat(rows), value_range=gen.output_range, ncol=top + 1, scale=2)
    save_npz(
        out.path("eigvecs.npz"),
        **latent_arrays(gen, result.z),
        eigenvalues=result.eigenvalues.numpy(),
        eigenvectors=result.eigenvectors.numpy(),
        condition=result.condition.numpy(),
        random_directions=result.random_directions.numpy(),
        step=np.float64(result.step),
        traversal_t=result.traversal_t.numpy(),
    )


@write_outputs.register
def _write_veff(result: VeffResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """veff_curve.png and veff.npz (latents, eigenvalues, delta(j, 0), delta(j, i), counts, curve)."""
    plot_veff_curve(
        out.path("veff_curve.png"),
        result.curve_tau.numpy(),
        result.curve_counts.numpy().astype(np.float64),
        marks=[(tau, float(v)) for tau, v in zip(result.taus, result.veff, strict=True)],
        title=(
            f"v_eff(tau), {gen.arch} nz={gen.nz}: M={result.z.shape[0]} latents, "
            f"K={result.params.num_directions} {result.params.directions} directions, alpha={result.step:g}"
        ),
    )
    save_npz(
        out.path("veff.npz"),
        **latent_arrays(gen, result.z),
        eigenvalues=result.eigenvalues.numpy(),
        delta0=result.delta0.numpy(),
        delta=result.delta.numpy(),
        taus=np.asarray(result.taus, dtype=np.float64),
        counts=result.counts.numpy(),
        curve_tau=result.curve_tau.numpy(),
        curve_veff=result.curve_counts.double().mean(0).numpy(),
        step=np.float64(result.step),
    )


@write_outputs.register
def _write_pag(result: PagResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """latents.npz (key ``z``, for ``loglik --latents``), reconstructions.png, disagreement.png, pag.png."""
    rev = result.reversal
    if not rev.num_done:
        return
    save_npz(
        out.path("latents.npz"),
        **latent_arrays(gen, rev.z),
        mse=rev.mse.numpy(),
        loss_history=rev.loss_history.numpy(),
        index=np.arange(rev.num_done),
    )
    ncol = min(SHOWN_PER_ROW, rev.num_done)
    k = min(NUM_SHOWN, rev.num_done // ncol * ncol)
    originals, recs = result.data.images[:k].float(), rev.reconstructions[:k]
    # row pairs: ncol originals, then their reconstructions underneath
    rows = [block[start : start + ncol] for start in range(0, k, ncol) for block in (originals, recs)]
    save_grid(
        out.path("reconstructions.png"),
        torch.cat(rows),
        value_range=gen.output_range,
        ncol=ncol,
        scale=2,
    )
    if result.disagreement is not None:
        top = result.disagreement.images
        save_grid(out.path("disagreement.png"), top, value_range=gen.output_range, ncol=10, scale=2)
        save_grid(
            out.path("agreement.png"), result.disagreement.agree_images, value_range=gen.output_range, ncol=10, scale=2
        )
    if result.score is not None:
        plot_pag_diagnostics(
            out.path("pag.png"),
            loss_history=rev.loss_history.numpy(),
            nu_over_sigma=(result.score.nu / result.score.sigma).numpy(),
            title=f"PAG = {result.score.pag:.4g} nats (paper-literal {result.score.pag_paper_literal:.4g}), "
            f"{rev.num_done} images",
        )


@write_outputs.register
def _write_prior(result: PriorResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """prior.safetensors (h, native format), latents.npz (the codes, key ``z``, and the held-out ``heldout``
    indices), prior_training.npz/.png (the PGAN's curve), samples_prior.png (row pairs: G(z), then G(h(z')) from
    the same seeds), codes_pca.png, disagreement.png (under the generator's prior) and disagreement_pgan.png."""
    p, tr = result.params, result.training
    save_prior_net(
        out.path("prior.safetensors"),
        tr.h,
        fitted={
            "generator": {"sha256": gen.sha256, "path": gen.path, "arch": gen.arch, "nz": gen.nz},
            "data": result.data_json(),
            "num_codes": int(result.codes.shape[0]),
            "heldout_fraction": p.heldout,
            "seed": p.seed,
            "steps": p.pgan.steps,
            "lr": p.pgan.lr,
            "batch_size": p.pgan.batch_size,
            "critic_widths": list(p.pgan.critic_widths),
            "latent_prior": "z' ~ normal(0, I)",
        },
        provenance=f"gan-probe prior: the PGAN's generator h: R^{result.dim} -> R^{gen.nz}, fitted to codes "
        f"reversed from {result.codes_source} through {gen.path or gen.arch}",
    )
    save_npz(out.path("latents.npz"), **latent_arrays(gen, result.codes), heldout=result.heldout_index.numpy())
    save_npz(
        out.path("prior_training.npz"),
        d_loss=tr.d_loss.numpy(),
        g_loss=tr.g_loss.numpy(),
        d_real=tr.d_real.numpy(),
        d_fake=tr.d_fake.numpy(),
    )
    plot_prior_training(
        out.path("prior_training.png"),
        d_loss=tr.d_loss.numpy(),
        g_loss=tr.g_loss.numpy(),
        d_real=tr.d_real.numpy(),
        d_fake=tr.d_fake.numpy(),
        title=f"PGAN h: R^{result.dim} -> R^{gen.nz}, {p.pgan.steps} RMSProp steps, lr {p.pgan.lr:g}, "
        f"batch {p.pgan.batch_size}",
    )
    num = result.samples_z.shape[0]
    ncol = min(SHOWN_PER_ROW, num)
    rows = [block[s : s + ncol] for s in range(0, num, ncol) for block in (result.samples_z, result.samples_h)]
    save_grid(out.path("samples_prior.png"), torch.cat(rows), value_range=gen.output_range, ncol=ncol, scale=2)
    plot_code_projections(
        out.path("codes_pca.png"),
        result.heldout_projection.numpy(),
        [(c.name, c.projection.numpy()) for c in result.comparisons],
        title=f"{result.num_heldout} held-out codes and draws of each prior, on the codes' first two principal axes",
    )
    for name, dis in (("disagreement.png", result.disagreement), ("disagreement_pgan.png", result.disagreement_pgan)):
        save_grid(out.path(name), dis.images, value_range=gen.output_range, ncol=10, scale=2)


@write_outputs.register
def _write_divergence(result: DivergenceResult, gen: LoadedGenerator, out: OutputDir) -> None:
    """divergence.npz (per sigma ``s<i>_``: forward terms per held-out point, reverse terms per model sample,
    both for each encoder side, and the encoder means); per sigma worst_covered_<i>.png (held-out images
    above their reconstructions G(mean r(z|y))), farthest_samples_<i>.png, encoder_<i>.png; with several
    sigmas divergence_vs_sigma.png."""
    arrays: dict[str, Any] = {
        "sigmas": np.asarray([s.sigma for s in result.per_sigma]),
        "heldout_index": result.heldout_index.numpy(),
    }
    for i, s in enumerate(result.per_sigma):
        for side in s.forward:
            arrays[f"s{i}_forward_joint_{side}"] = s.forward[side].joint.numpy()
            arrays[f"s{i}_forward_iw_{side}"] = s.forward[side].iw.numpy()
            arrays[f"s{i}_encoder_mean_{side}"] = s.forward[side].means.numpy()
            arrays[f"s{i}_reverse_joint_{side}"] = s.reverse[side].joint.numpy()
            arrays[f"s{i}_reverse_iw_{side}"] = s.reverse[side].iw.numpy()
        arrays[f"s{i}_model_z"] = s.model_z.numpy()
        if len(gen.output_shape) == 3:
            shown = s.worst_images.shape[0]
            ncol = min(8, shown)
            rows = [
                block[start : start + ncol]
                for start in range(0, shown // ncol * ncol, ncol)
                for block in (s.worst_images, s.worst_reconstructions)
            ]
            save_grid(out.path(f"worst_covered_{i}.png"), torch.cat(rows), value_range=gen.output_range, ncol=ncol)
            save_grid(out.path(f"farthest_samples_{i}.png"), s.farthest_images, value_range=gen.output_range, ncol=8)
        plot_encoder_training(
            out.path(f"encoder_{i}.png"),
            [
                (f"{side} side", f.train_loss.numpy(), f.val_steps.numpy(), f.val_loss.numpy())
                for side, f in s.fits.items()
            ],
            title=f"encoder r(z|y) at sigma {s.sigma:g} (validation: held-out data / simulated pairs)",
        )
    save_npz(out.path("divergence.npz"), **arrays)
    if len(result.per_sigma) > 1:
        names = list(result.per_sigma[0].divergences)
        plot_divergence_vs_sigma(
            out.path("divergence_vs_sigma.png"),
            arrays["sigmas"],
            {
                n: (
                    np.asarray([s.divergences[n].bound for s in result.per_sigma]),
                    np.asarray([s.divergences[n].stderr for s in result.per_sigma]),
                )
                for n in names
            },
            title=f"spread divergences of {gen.arch} nz={gen.nz} to its data",
        )


__all__ = ["write_outputs", "write_samples"]
