"""pyproject claims only the Python versions the suite runs on.

pip already refuses to install on an interpreter outside ``requires-python``;
what it cannot notice is a claim wider than what is tested (it said 3.10 while
the code needs 3.11's ``datetime.UTC``). Widening the claim means running the
suite on the new version too (``make test``, ``.ci/run``), then listing it here.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

TESTED = {(3, 11)}  # the Pythons the suite runs on; the venv and CI use 3.11


def test_requires_python_admits_only_the_tested_versions():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    claim = SpecifierSet(pyproject["project"]["requires-python"])
    admitted = {
        (3, minor)
        for minor in range(6, 20)
        if any(claim.contains(f"3.{minor}.{micro}") for micro in range(30))
    }
    assert admitted == TESTED, f"requires-python {claim} admits {sorted(admitted)}"
    assert sys.version_info[:2] in TESTED, f"the suite runs on an untested {sys.version}"
