"""The machine: device and dtype resolution for ``--device`` and ``--dtype``, and the memory available.

The memory figures (:func:`available_bytes`) are facts of the machine, read where a run is planned
(:func:`gan_probe.analyses.plan.plan_run`) and where its estimated peak is checked
(:func:`gan_probe.analyses.memory.check_memory`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (a GPU: free plus what torch has cached but not used) or of the host (the CPU:
    :func:`host_available_bytes`); None when it cannot be told."""
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
    limit = cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def cgroup_room() -> int | None:
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
