"""pyproject.toml stays buildable by the setuptools of tomorrow (issue 11, item 13): the
licence is an SPDX string (the TOML-table form is deprecated and warned about at every
build, then removed) and the build backend is bounded, so a major release that drops what
this file uses cannot break both images' builds unnoticed."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO_ROOT


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string():
    license_ = pyproject()["project"]["license"]
    assert isinstance(license_, str) and re.fullmatch(r"[A-Za-z0-9.+-]+", license_)


def test_setuptools_is_bounded_on_both_sides():
    (requirement,) = [r for r in pyproject()["build-system"]["requires"] if "setuptools" in r]
    low = re.search(r">=\s*(\d+)", requirement)
    high = re.search(r"<\s*(\d+)", requirement)
    assert low and high, requirement
    assert int(low.group(1)) >= 77  # the first setuptools that reads SPDX `license` strings
    assert int(high.group(1)) > int(low.group(1))
