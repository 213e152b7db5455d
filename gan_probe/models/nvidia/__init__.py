"""NVIDIA StyleGAN networks, read and rebuilt without NVIDIA's code."""
