"""NVIDIA's StyleGAN generators: their pickles read without running them, their networks rebuilt in plain torch.

- :mod:`gan_probe.models.nvidia.pickle_reader`: the network-snapshot pickles of
  stylegan2-ada-pytorch and stylegan3, and the TensorFlow-era StyleGAN2 /
  StyleGAN2-ADA pickles, read by a restricted unpickler into plain records
  (class name, constructor arguments, flat state).
- :mod:`gan_probe.models.nvidia.tf_variables`: a TensorFlow-era generator's
  variables renamed and reshaped into the state of stylegan2-ada-pytorch's
  Generator.
"""
