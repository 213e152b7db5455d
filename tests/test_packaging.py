"""The wheel must carry every sub-package and the bundled files (a non-editable install runs with no CKPT)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gan_probe").rglob("__init__.py")}
    assert on_disk <= listed, f"missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["gan_probe.sample_checkpoints"] == "sample_checkpoints"


def test_bundled_files_match_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["gan_probe.sample_checkpoints"]
    shipped = {p for pattern in patterns for p in (ROOT / "sample_checkpoints").glob(pattern)}
    names = {p.name for p in shipped}
    assert "mnist-dcgan-nz32.safetensors" in names and "mnist-heldout.npz" in names


def test_python_floor_matches_ruff_target():
    """The floor is the oldest Python the suite is run on (no torch for 3.10 could be installed to test it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["requires-python"] == ">=3.11"
    assert config["tool"]["ruff"]["target-version"] == "py311"
