"""The performance targets of docs/design.md §9 as one table, and how a measured value is checked against one.

Each :class:`Target` names what ``bench`` measures (``quantity``), the bound
(``comparison`` and ``threshold``), the mode that measures it (``bench``,
``bench spectrum``, ``bench throughput``), the devices it is stated for, and
what it is stated for beyond that (the ``note`` shown when a run measures it on
another model or setting). A target that does not apply to a run is still
reported, with ``met`` None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Target:
    """One row of :data:`TARGETS`.

    ``name`` is shown in the report (``{method}`` and ``{cond}`` are filled in
    for the per-row spectrum targets); ``devices`` is ``("cpu", "cuda")`` or
    ``("cuda",)``; ``note`` says what the target is stated for, shown when it
    does not apply."""

    name: str
    quantity: str
    comparison: str
    threshold: float
    mode: str
    devices: tuple[str, ...]
    note: str = ""

    def runs_on(self, device: torch.device) -> bool:
        """Whether the target is stated for this device's type."""
        return device.type in self.devices

    def check(
        self, value: float | None, *, applies: bool = True, note: str | None = None, **fill: Any
    ) -> dict[str, Any]:
        """The report's entry: ``met`` is None when the value is missing or the target does not apply;
        ``note`` (default: the table's when it does not apply, else empty) replaces the table's."""
        met = None
        if value is not None and applies:
            met = bool(value <= self.threshold) if self.comparison == "<=" else bool(value >= self.threshold)
        if note is None:
            note = "" if applies else self.note
        return {
            "name": self.name.format(**fill),
            "value": value,
            "target": f"{self.comparison} {self.threshold:g}",
            "applies": applies,
            "met": met,
            "note": note,
        }


ANY_DEVICE = ("cpu", "cuda", "mps")

#: docs/design.md §9, by key.
TARGETS: dict[str, Target] = {
    "exact_over_limit": Target(
        "exact / limit", "exact seconds over the limit's (nz JVPs + one QR)", "<=", 1.3, "bench", ANY_DEVICE
    ),
    "naive_over_exact": Target(
        "naive / exact per latent",
        "seconds per latent of the reverse-mode peer over exact's",
        ">=",
        50.0,
        "bench",
        ANY_DEVICE,
        "the target is stated for a 64x64x3 DCGAN",
    ),
    "stylegan2_naive_over_exact": Target(
        "naive / exact per latent, StyleGAN2 256x256",
        "seconds per latent of the reverse-mode peer over exact's",
        ">=",
        100.0,
        "bench",
        ANY_DEVICE,
        "the target is stated for a 256x256 StyleGAN2",
    ),
    "stylegan3_naive_over_exact": Target(
        "naive / exact per latent, StyleGAN3 256x256",
        "seconds per latent of the reverse-mode peer over exact's",
        ">=",
        100.0,
        "bench",
        ANY_DEVICE,
        "the target is stated for a 256x256 StyleGAN3",
    ),
    "chebyshev_over_exact": Target(
        "chebyshev (paper setting) / exact",
        "seconds of the paper's Chebyshev setting over exact's",
        ">=",
        1.0,
        "bench",
        ANY_DEVICE,
        "the target is stated for nz = 128 and (m,p,t,g,eps) = (10,20,20,1.2,0.1)",
    ),
    "gradient_over_value": Target(
        "exact gradient / value",
        "seconds of the exact value and gradient over the value's",
        "<=",
        3.5,
        "bench",
        ANY_DEVICE,
    ),
    "slq_error": Target(
        "{method} median |error| per dim, cond {cond:g}",
        "median |error| of slq in nats per latent dimension, per condition number",
        "<=",
        0.05,
        "bench spectrum",
        ANY_DEVICE,
    ),
    "slq_coverage": Target(
        "{method} interval coverage, cond {cond:g}",
        "how often slq's 95% interval holds the prescribed ln det, per condition number",
        ">=",
        0.9,
        "bench spectrum",
        ANY_DEVICE,
    ),
    "dcgan_latents_per_s": Target(
        "exact ln Q latents/s, 64x64x3 DCGAN nz 128, one GPU",
        "latents per second of exact ln Q in one process, at the best batch and chunk",
        ">=",
        1000.0,
        "bench throughput",
        ("cuda",),
        "set for the 64x64x3 DCGAN (nz 128) on a GPU",
    ),
    "two_process_speedup": Target(
        "speed-up of two processes over one",
        "latents per second of two processes over rank 0 alone",
        ">=",
        1.8,
        "bench throughput",
        ("cuda",),
        "set for two GPU processes on one machine",
    ),
    "divergence_run_seconds": Target(
        "divergence default run, seconds",
        "wall seconds of gan-probe divergence with its defaults on the bundled checkpoint and data",
        "<=",
        300.0,
        "bench divergence",
        ("cpu",),
        "stated for the default run on 2 CPU cores",
    ),
    "ais_prior_over_encoder_steps": Target(
        "AIS steps to 1 nat, prior start / encoder start",
        "AIS steps the prior start needs to come within the tolerance of the reference, over the encoder start's",
        ">=",
        10.0,
        "bench divergence",
        ANY_DEVICE,
    ),
}

#: slq's spectrum targets are stated for budgets up to this many products per latent.
SLQ_MAX_PRODUCTS = 200


__all__ = ["ANY_DEVICE", "SLQ_MAX_PRODUCTS", "TARGETS", "Target"]
