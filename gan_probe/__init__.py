"""gan-probe: how a trained GAN generator uses its latent space.

Implements Ramesh & LeCun (2018), "Backpropagation for Implicit Spectral
Densities", and Kilcher, Lucchi & Hofmann (2017), "Flexible Prior
Distributions for Deep Generative Models". The numerics live in
:mod:`gan_probe.spectral` and need neither Typer nor Rich.
"""

__version__ = "0.1.0"
