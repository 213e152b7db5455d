"""The package version, in one place.

pyproject.toml reads it (a dynamic version) and ``gan_probe.__version__``
re-exports it, so the wheel's metadata and the reports agree.
"""

__version__ = "0.2.0"
