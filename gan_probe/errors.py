"""The project's exception types. Imports nothing of the project.

Every error a user can cause is a :class:`GanProbeError`; the CLI prints its
message on one line and exits 1. :class:`GateFailed` is the exit-3 outcome of a
``--min``/``--max`` gate, raised only after the report has been written.
"""


class GanProbeError(Exception):
    """Bad input or an unusable checkpoint: one clear line, exit code 1."""


class CheckpointError(GanProbeError):
    """A checkpoint file is missing, corrupt, unsafe or inconsistent."""


class DataError(GanProbeError):
    """A latent, image or array file cannot be used."""


class GateFailed(Exception):
    """A ``--min``/``--max`` gate on a headline figure failed (exit code 3)."""
