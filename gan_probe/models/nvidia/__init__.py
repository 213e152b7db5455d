"""NVIDIA's StyleGAN generators: their pickles read without running them, their networks rebuilt in plain torch.

- :mod:`gan_probe.models.nvidia.pickle_reader`: the network-snapshot pickles of
  stylegan2-ada-pytorch and stylegan3, and the TensorFlow-era StyleGAN2 /
  StyleGAN2-ADA pickles, read by a restricted unpickler into plain records
  (class name, constructor arguments, flat state: :mod:`~gan_probe.models.nvidia.records`).
- :mod:`gan_probe.models.nvidia.tf_variables`: a TensorFlow-era generator's
  variables renamed and reshaped into the state of stylegan2-ada-pytorch's
  Generator.
- :mod:`gan_probe.models.nvidia.stylegan2` and :mod:`~gan_probe.models.nvidia.stylegan3`
  (with :mod:`~gan_probe.models.nvidia.stylegan3_ops`): the generators rebuilt from
  a record's init kwargs and stored buffers (Karras et al. 2020, 2021).
- :mod:`gan_probe.models.nvidia.loader`: the checkpoint format that ties them
  together (one entry of :data:`gan_probe.models.checkpoint.FORMATS`).
"""
