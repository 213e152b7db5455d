"""Architectures, priors, and checkpoint reading and writing.

A checkpoint format is one module with ``NAME``, ``detect(file, options)`` and
``load(file, options, *, device, dtype)``; :data:`gan_probe.models.checkpoint.FORMATS`
lists them in the order they are tried (its docstring states the interface).
"""

from gan_probe.models.architectures import DCGANGenerator, MLPGenerator, build_generator
from gan_probe.models.checkpoint import LoadedGenerator, LoadOptions, load_generator, save_checkpoint, wrap_module
from gan_probe.models.priors import Prior

__all__ = [
    "DCGANGenerator",
    "LoadOptions",
    "LoadedGenerator",
    "MLPGenerator",
    "Prior",
    "build_generator",
    "load_generator",
    "save_checkpoint",
    "wrap_module",
]
