"""gan-probe: how a trained GAN generator uses its latent space.

Implements Ramesh & LeCun (2018), "Backpropagation for Implicit Spectral
Densities", and Kilcher, Lucchi & Hofmann (2017), "Flexible Prior
Distributions for Deep Generative Models". The numerics live in
:mod:`gan_probe.spectral` and need neither Typer nor Rich.
"""

from gan_probe._version import __version__ as __version__
