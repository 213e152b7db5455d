"""Architectures, priors, and checkpoint reading and writing."""

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
