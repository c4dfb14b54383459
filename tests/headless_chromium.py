"""The browser tests' Chromium (Debian's package, which `make test` installs)."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_or_skip() -> str:
    """The chromium command; a missing one fails under CI, where `make test` installed it."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (make test installs it)")
    return found
