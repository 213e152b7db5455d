"""The report every command writes (``report.json``, and stdout with ``--json``) and its gates.

docs/design.md §8.4: every report records the tool version, the command and its
argv, the checkpoint (path, sha256, arch, nz, prior, ...), the device, dtype,
seed and batch size, every parameter, the timings, the headline figures under
``results``, the files written, and the gate when one was set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gan_probe._version import __version__
from gan_probe.device import describe_device
from gan_probe.errors import GanProbeError


@dataclass
class Gate:
    """A ``--min``/``--max`` check on a command's headline figure (exit 3 when it fails)."""

    name: str
    value: float | None
    minimum: float | None
    maximum: float | None

    def __post_init__(self) -> None:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise GanProbeError(
                f"the gate on {self.name} can never pass: min {self.minimum:g} > max {self.maximum:g}", param="min"
            )

    def failure(self) -> str | None:
        """Why the gate failed, or None when it passed (or no bound was set)."""
        if self.minimum is None and self.maximum is None:
            return None
        if self.value is None:
            return f"{self.name} is undefined, so the gate cannot pass"
        if self.minimum is not None and self.value < self.minimum:
            return f"{self.name} = {self.value:.6g} is below --min {self.minimum:g}"
        if self.maximum is not None and self.value > self.maximum:
            return f"{self.name} = {self.value:.6g} is above --max {self.maximum:g}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "min": self.minimum,
            "max": self.maximum,
            "passed": self.failure() is None,
        }


def build_report(
    command: str,
    *,
    argv: Sequence[str] | None,
    checkpoint: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    batch_size: int,
    parameters: dict[str, Any],
    timings: dict[str, float],
    results: dict[str, Any],
    files: list[str],
    gate: Gate | None = None,
    interrupted: bool = False,
    world: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report: provenance first, headline figures under ``results``."""
    report: dict[str, Any] = {
        "tool": "gan-probe",
        "version": __version__,
        "command": command,
        "argv": list(argv) if argv is not None else None,
        "checkpoint": checkpoint,
        "device": describe_device(device),
        "dtype": str(dtype).replace("torch.", ""),
        "seed": seed,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "world": world if world is not None else {"size": 1, "backend": None},
        "parameters": parameters,
        "timings": timings,
        "results": results,
        "files": files,
    }
    if gate is not None:
        report["gate"] = gate.to_json()
    if interrupted:
        report["interrupted"] = True
    return report


__all__ = ["Gate", "build_report"]
