"""Where the bundled sample checkpoints live.

In a source checkout or an editable install they are the repository's
``sample_checkpoints/``; a wheel carries them as ``gan_probe/sample_checkpoints``.
"""

from __future__ import annotations

from pathlib import Path

from gan_probe.errors import CheckpointError

DEFAULT_NAME = "mnist-dcgan-nz32.safetensors"
HELDOUT_NAME = "mnist-heldout.npz"


def samples_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "sample_checkpoints", here.parent / "sample_checkpoints"):
        if (candidate / DEFAULT_NAME).is_file():
            return candidate
    raise CheckpointError("the bundled sample checkpoints are missing from this installation; pass a CKPT path")


def default_checkpoint() -> Path:
    """The checkpoint used when a command is given none."""
    return samples_dir() / DEFAULT_NAME


def heldout_data() -> Path:
    """Held-out MNIST images (never seen in training) shipped beside the checkpoints."""
    return samples_dir() / HELDOUT_NAME


def bundled_checkpoints() -> list[Path]:
    return sorted(samples_dir().glob("*.safetensors"))
