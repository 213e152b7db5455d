"""NVIDIA's StyleGAN networks: pickles read without executing them, generators rebuilt in plain torch."""
