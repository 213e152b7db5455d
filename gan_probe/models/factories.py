"""The custom-architecture format: ``--generator package.module:factory``, the one path that runs code.

Only the user's own code runs, by explicit request: the factory builds an
``nn.Module``; CKPT, when given, holds its weights (or the factory loads them
itself when it takes ``ckpt_path``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models.loaded import (
    LoadedGenerator,
    LoadOptions,
    _Unsqueezed,
    file_sha256,
    parse_output_range,
    resolve_prior,
    wrap_module,
)
from gan_probe.models.state_dicts import _load_state, read_checkpoint

NAME = "custom factory"


def detect(file: Path | None, options: LoadOptions) -> bool:
    """``--generator`` given (a program before this format keeps its own architecture and refuses the flag)."""
    return options.generator is not None


def load(
    path: str | os.PathLike | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype
) -> LoadedGenerator:
    """Build ``--generator package.module:factory``. A factory taking ``ckpt_path`` gets CKPT's path and loads
    the weights itself; one taking ``device`` gets the device. Otherwise CKPT's weights are loaded into the
    module (found by ``--key`` or by rule). The module's ``nz`` and ``output_range`` attributes are read."""
    spec = options.generator or ""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CheckpointError(f"--generator must be package.module:factory, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"--generator {spec}: cannot import it ({exc})") from None
    takes = _factory_parameters(factory)
    if "ckpt_path" in takes and options.key is not None:
        raise CheckpointError(f"--generator {spec} loads CKPT itself (it takes ckpt_path): drop --key", param="key")
    kwargs: dict[str, Any] = {}
    if "ckpt_path" in takes:
        kwargs["ckpt_path"] = str(path) if path is not None else None
    if "device" in takes:
        kwargs["device"] = torch.device(device)
    try:
        module = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code, reported on one line
        raise CheckpointError(f"--generator {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"--generator {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    nz = options.nz or getattr(module, "nz", None)
    if nz is None:
        raise CheckpointError(f"--generator {spec}: give --nz (the module has no 'nz' attribute)", param="nz")
    output_range = _range_attribute(module, spec)
    sha, container = None, None
    if path is not None:
        sha = file_sha256(Path(path))
        if "ckpt_path" not in takes:
            container, _ = read_checkpoint(Path(path), options.key)
            _load_state(module, container.state, str(path))
    module.eval()
    probe = next(iter(module.parameters()), None)
    with torch.no_grad():
        try:
            module(
                torch.zeros(
                    2,
                    int(nz),
                    device=probe.device if probe is not None else "cpu",
                    dtype=probe.dtype if probe is not None and probe.is_floating_point() else None,
                )
            )
        except Exception:  # noqa: BLE001 - try the DCGAN-style (B, nz, 1, 1) input next
            module = _Unsqueezed(module)
    weights = ""
    if path is not None:
        weights = (
            f" with weights {path}" if "ckpt_path" not in takes else f", weights loaded by the factory from {path}"
        )
    return wrap_module(
        module,
        nz=int(nz),
        prior=resolve_prior(None, options),
        output_range=output_range,
        arch=f"custom:{spec}",
        provenance=f"custom architecture {spec}{weights}",
        path=str(path) if path is not None else None,
        sha256=sha,
        source="custom",
        device=device,
        dtype=dtype,
        key=container.key if container is not None else None,
        extras=container.extras if container is not None else None,
        seed=options.seed,
    )


def _factory_parameters(factory: Any) -> set[str]:
    """The names of the parameters a factory accepts (empty when its signature cannot be read)."""
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _range_attribute(module: nn.Module, spec: str) -> tuple[float, float] | None:
    """A module's ``output_range`` attribute, checked: a pair low < high, or None."""
    value = getattr(module, "output_range", None)
    if value is None:
        return None
    try:
        return parse_output_range(value)
    except CheckpointError as exc:
        raise CheckpointError(f"--generator {spec}: its output_range attribute: {exc}") from None
