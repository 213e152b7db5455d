"""The ``gan_probe`` metadata of a native checkpoint: its key, its version, the check of its fields, the writer.

A native checkpoint is a ``.safetensors`` file holding the generator's state
dict, with a metadata key ``gan_probe`` whose JSON value records
``format_version``, ``arch``, ``config``, ``prior``, ``output`` (shape and
range) and ``provenance``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from gan_probe.atomic import write_atomic
from gan_probe.errors import CheckpointError
from gan_probe.models.loaded import range_json
from gan_probe.models.priors import Prior

FORMAT_VERSION = 1

METADATA_KEY = "gan_probe"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_metadata(meta: Mapping, file: Path | str) -> None:
    """Refuse gan_probe metadata whose fields have the wrong JSON types, naming the field and the value.

    ``arch`` a string, ``config`` an object, ``prior`` an object with a string ``kind`` and finite
    numbers ``sigma``/``low``/``high``, ``output`` an object with ``shape`` a list of positive integers
    and ``range`` null or two finite numbers low < high, ``provenance`` a string; every field optional.
    """

    def bad(field: str, want: str, value: object) -> CheckpointError:
        shown = json.dumps(value) if len(json.dumps(value)) <= 60 else json.dumps(value)[:57] + "..."
        return CheckpointError(
            f"{file}: the gan_probe metadata field {field} must be {want}, got {shown}; fix the file's metadata"
        )

    if "arch" in meta and not (isinstance(meta["arch"], str) and meta["arch"]):
        raise bad("arch", "an architecture name (a string)", meta["arch"])
    if "config" in meta and not isinstance(meta["config"], dict):
        raise bad("config", 'a JSON object like {"nz": 32, ...}', meta["config"])
    if "provenance" in meta and not isinstance(meta["provenance"], str):
        raise bad("provenance", "a string", meta["provenance"])
    prior = meta.get("prior")
    if "prior" in meta and not isinstance(prior, dict):
        raise bad("prior", 'a JSON object like {"kind": "normal", "sigma": 1.0}', prior)
    if isinstance(prior, dict):
        if "kind" in prior and not isinstance(prior["kind"], str):
            raise bad("prior.kind", '"normal" or "uniform"', prior["kind"])
        for key in ("sigma", "low", "high"):
            if key in prior and not _is_number(prior[key]):
                raise bad(f"prior.{key}", "a finite number", prior[key])
    output = meta.get("output")
    if "output" in meta and not isinstance(output, dict):
        raise bad("output", 'a JSON object like {"shape": [1, 32, 32], "range": [-1, 1]}', output)
    if isinstance(output, dict):
        shape = output.get("shape")
        if "shape" in output and not (isinstance(shape, list) and all(type(v) is int and v >= 1 for v in shape)):
            raise bad("output.shape", "a list of positive integers", shape)
        rng = output.get("range")
        if rng is not None and not (
            isinstance(rng, list) and len(rng) == 2 and all(_is_number(v) for v in rng) and rng[0] < rng[1]
        ):
            raise bad("output.range", "null or two finite numbers [low, high] with low < high", rng)


def save_checkpoint(
    path: str | os.PathLike,
    module: nn.Module,
    *,
    arch: str,
    config: Mapping,
    prior: Prior,
    output_shape: tuple[int, ...] | list[int],
    output_range: tuple[float, float] | list[float] | None,
    provenance: str,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a native gan-probe checkpoint (safetensors + ``gan_probe`` metadata), atomically.

    ``extra``: further metadata fields (JSON values) beside the standard ones, which they may not replace."""
    from safetensors.torch import save as safetensors_bytes

    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": dict(config),
        "prior": prior.to_meta(),
        "output": {"shape": [int(s) for s in output_shape], "range": range_json(output_range)},
        "provenance": provenance,
    }
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata may not replace the standard fields {clash}")
    meta.update(extra or {})
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    blob = safetensors_bytes(state, metadata={METADATA_KEY: json.dumps(meta)})
    write_atomic(Path(path), lambda fh: fh.write(blob))
