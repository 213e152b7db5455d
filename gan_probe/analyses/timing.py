"""Timing whole calls on a device, and the machine a timing was taken on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from gan_probe import interrupt
from gan_probe.device import describe_device

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], T], device: torch.device, *, repeats: int, warmup: int = 1
) -> tuple[float, list[float], T]:
    """(median seconds, all seconds, last result) of ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
        interrupt.poll()
    synchronize(device)
    times: list[float] = []
    out = None
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        interrupt.poll()  # Ctrl-C on the command line is served between timed calls
    return statistics.median(times), times, out  # type: ignore[return-value]


def machine_info(device: torch.device) -> dict[str, Any]:
    """The device, platform, processor, core count, torch threads and version a timing was taken on."""
    return {
        "device": describe_device(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


__all__ = ["machine_info", "synchronize", "time_call"]
