"""setuptools hook (named in pyproject.toml's ``[tool.setuptools] cmdclass``): data-only packages ship no modules.

``sample_checkpoints/`` is installed as ``gan_probe.sample_checkpoints`` so that a
non-editable install finds the bundled checkpoints beside the code. The folder also
holds ``train.py``, the script that trained them; it belongs in the repository and
the sdist, not in the wheel, where it would be an importable module that needs
``mlxtend`` and edits ``sys.path``.

setuptools has no declarative way to leave one module out of a listed package:
``exclude-package-data`` filters data files only, ``packages.find.exclude`` works on
package names, and every ``*.py`` file in a listed package's folder is built as a
module (pypa/setuptools#511). So the packages named below are built from their
``package-data`` alone.
"""

from __future__ import annotations

from setuptools.command.build_py import build_py

#: packages whose folder is data (checkpoints, arrays, images); their .py files are scripts, not modules
DATA_ONLY_PACKAGES = frozenset({"gan_probe.sample_checkpoints"})


class BuildPy(build_py):
    """``build_py`` that builds no modules for :data:`DATA_ONLY_PACKAGES` (their package data still ships)."""

    def find_package_modules(self, package, package_dir):
        if package in DATA_ONLY_PACKAGES:
            return []
        return super().find_package_modules(package, package_dir)
