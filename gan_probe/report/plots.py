"""Plots (matplotlib, Agg backend; imported lazily so the numerics never pull it in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_loglik_contour(
    path: Path,
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    *,
    labels: tuple[str, str],
    title: str,
) -> None:
    """Filled contours of ``values[row=y, col=x]`` with a colour bar and the grid points marked.

    Non-finite values (singular M, outside a uniform box) are left blank and
    marked with a cross.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    X, Y = np.meshgrid(xs, ys)
    finite = np.isfinite(values)
    masked = np.ma.masked_invalid(values)
    if finite.sum() >= 4 and np.ptp(values[finite]) > 0:
        cs = ax.contourf(X, Y, masked, levels=20, cmap="viridis")
        ax.contour(X, Y, masked, levels=10, colors="k", linewidths=0.4, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="ln Q [nats]")
    ax.scatter(X[finite], Y[finite], s=6, c="white", edgecolors="k", linewidths=0.4, label="grid points")
    if (~finite).any():
        ax.scatter(X[~finite], Y[~finite], s=14, marker="x", c="red", label="ln Q undefined")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_pag_diagnostics(
    path: Path,
    *,
    loss_history: np.ndarray,
    nu_over_sigma: np.ndarray,
    title: str,
) -> None:
    """Two panels for ``pag``: the reversal loss per step, and nu_i / sigma per principal axis.

    The prior is matched exactly where every nu_i / sigma is 1 (dashed line);
    PAG adds 1/2 (r - ln r - 1), r = (nu_i / sigma)^2, for each axis.
    """
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=110)
    steps = np.arange(len(loss_history))
    ax0.plot(steps, loss_history, lw=1.2)
    if np.all(loss_history > 0) and loss_history.max() > 10 * loss_history.min():
        ax0.set_yscale("log")
    ax0.set_xlabel("step")
    ax0.set_ylabel("mean 1/2 |G(z) - x|^2")
    ax0.set_title("generator reversal", fontsize=9)
    axes = np.arange(1, len(nu_over_sigma) + 1)
    ax1.bar(axes, nu_over_sigma, color="tab:blue", width=0.8)
    ax1.axhline(1.0, color="k", ls="--", lw=0.8, label="prior (nu = sigma)")
    ax1.set_xlabel("principal axis i of the recovered latents")
    ax1.set_ylabel("nu_i / sigma")
    ax1.set_title("second moments of the recovered latents", fontsize=9)
    ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_log_spectra(path: Path, eigenvalues: np.ndarray, *, title: str) -> None:
    """Eigenvalues lambda_i of M (T, nz), descending, one line per trial latent, on a log axis.

    Ramesh & LeCun (2018), Figure 5a/b. Zero eigenvalues (rank-deficient J)
    cannot be drawn on a log axis and are left out of their line.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    num, nz = eigenvalues.shape
    idx = np.arange(1, nz + 1)
    cmap = plt.get_cmap("viridis")
    for t in range(num):
        lam = np.where(eigenvalues[t] > 0, eigenvalues[t], np.nan)
        ax.plot(idx, lam, marker="o", markersize=2.5, linewidth=1, color=cmap(t / max(1, num - 1)), label=f"trial {t}")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue lambda_i of M = J^T J")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if num <= 12:
        ax.legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_veff_curve(
    path: Path,
    taus: np.ndarray,
    counts: np.ndarray,
    *,
    marks: list[tuple[float, float]],
    title: str,
) -> None:
    """v_eff(tau), the mean over latents of #{i : delta(j, i) > tau}, with the 10-90% band of the per-latent counts.

    ``counts`` is (M, len(taus)); ``marks`` are (tau, v_eff) points to label
    (the requested thresholds). Ramesh & LeCun (2018), Figure 6a-d.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.fill_between(
        taus,
        np.percentile(counts, 10, axis=0),
        np.percentile(counts, 90, axis=0),
        alpha=0.25,
        label="10-90% of latents",
    )
    ax.plot(taus, counts.mean(axis=0), linewidth=1.5, label="v_eff(tau)")
    for tau, value in marks:
        ax.plot([tau], [value], "o", color="C3")
        ax.annotate(f"{value:.3g}", (tau, value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("threshold tau")
    ax.set_ylabel("v_eff(tau)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(taus[0], taus[-1])
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_ascent(path: Path, loglik: np.ndarray, condition: np.ndarray, *, title: str) -> None:
    """ln Q and cond(M) (log scale) against step, one line per latent; arrays (steps + 1, K)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=110)
    steps = np.arange(loglik.shape[0])
    for k in range(loglik.shape[1]):
        ax1.plot(
            steps, np.where(np.isfinite(loglik[:, k]), loglik[:, k], np.nan), lw=1, label=f"z{k}" if k < 8 else None
        )
        cond = condition[:, k]
        ax2.plot(steps, np.where(np.isfinite(cond) & (cond > 0), cond, np.nan), lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("ln Q(G(z)) [nats]")
    ax2.set_xlabel("step")
    ax2.set_ylabel("cond(M) = lambda_max / lambda_min")
    if np.isfinite(condition).any() and (condition[np.isfinite(condition)] > 0).any():
        ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_prior_training(
    path: Path, *, d_loss: np.ndarray, g_loss: np.ndarray, d_real: np.ndarray, d_fake: np.ndarray, title: str
) -> None:
    """The PGAN's training curve: both losses per step, and the discriminator's mean output on real codes
    and on h(z') (1/2 each at the adversarial equilibrium, dashed)."""
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=110)
    steps = np.arange(1, len(d_loss) + 1)
    ax0.plot(steps, d_loss, lw=0.8, label="discriminator")
    ax0.plot(steps, g_loss, lw=0.8, label="generator h (-ln D(h(z')))")
    ax0.set_xlabel("step")
    ax0.set_ylabel("loss [nats]")
    ax0.legend(fontsize=7)
    ax1.plot(steps, d_real, lw=0.8, label="D on reversed codes")
    ax1.plot(steps, d_fake, lw=0.8, label="D on h(z')")
    ax1.axhline(0.5, color="k", ls="--", lw=0.8)
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("mean D output")
    ax1.legend(fontsize=7)
    for ax in (ax0, ax1):
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_code_projections(path: Path, heldout: np.ndarray, panels: list[tuple[str, np.ndarray]], *, title: str) -> None:
    """One panel per prior: the held-out codes (grey) and the prior's draws (colour), both (k, 2) on the
    held-out codes' first two principal axes; every panel has the same limits."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=110, squeeze=False)
    every = np.concatenate([heldout, *(p for _, p in panels)])
    lo, hi = np.percentile(every, 0.5, axis=0), np.percentile(every, 99.5, axis=0)
    pad = 0.05 * (hi - lo)
    for ax, (name, points) in zip(axes[0], panels):
        ax.scatter(heldout[:, 0], heldout[:, 1], s=4, c="0.55", alpha=0.6, label="held-out codes")
        ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:red", alpha=0.5, label=name)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("principal axis 1")
        ax.legend(fontsize=6, loc="upper right", markerscale=2)
    axes[0][0].set_ylabel("principal axis 2")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
