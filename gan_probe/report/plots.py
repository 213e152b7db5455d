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
