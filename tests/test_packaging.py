"""The built wheel carries every subpackage (an editable install would hide a missing one)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> set[str]:
    """Every package of the source tree, found by its ``__init__.py`` (independently of setuptools)."""
    return {str(p.parent.relative_to(ROOT)).replace("/", ".")
            for top in ("surgery", "analysis") for p in (ROOT / top).rglob("__init__.py")}


@pytest.mark.slow
@pytest.mark.smoke
def test_wheel_holds_every_subpackage_and_type_marker(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (wheel,) = tmp_path.glob("headswap-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = _packages()
    assert {"surgery", "analysis", "analysis.training", "analysis.costs"} <= packages
    missing = sorted(p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names)
    assert not missing, f"packages missing from the wheel: {missing}"
    modules = {str(p.relative_to(ROOT)) for top in ("surgery", "analysis")
               for p in (ROOT / top).rglob("*.py")}
    assert modules <= names
    assert {"surgery/py.typed", "analysis/py.typed"} <= names
    assert not any(n.startswith(("tests/", "tools/")) for n in names)
