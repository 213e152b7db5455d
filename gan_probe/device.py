"""Device and dtype resolution for ``--device`` and ``--dtype``."""

from __future__ import annotations

import re

import torch

from gan_probe.errors import GanProbeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is an error."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise GanProbeError(f"--device {spec}: no CUDA device is available here (use --device cpu or auto)")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise GanProbeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise GanProbeError("--device mps: MPS is not available here (use --device cpu or auto)")
        return torch.device("mps")
    raise GanProbeError(f"--device {spec!r} is not one of auto, cpu, cuda, cuda:N, mps")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float32 or float64; MPS has no float64. ``auto`` runs float32 (the loader marks the generator for
    float64 promotion of flagged latents)."""
    if name.strip().lower() == "auto":
        return torch.float32
    try:
        dtype = DTYPES[name.strip().lower()]
    except KeyError:
        raise GanProbeError(
            f"--dtype {name!r} is not supported: use auto, float32 or float64 (Jacobians in half precision lose "
            "the spectrum)"
        ) from None
    if dtype == torch.float64 and device.type == "mps":
        raise GanProbeError("--dtype float64 is not available on MPS: use --dtype float32 or --device cpu")
    return dtype


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
