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
