"""Tests for the package metadata in pyproject.toml and the pinned set in requirements.lock."""

import os
import re

import tomli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomli.load(f)["project"]


def _names(requirements: list[str]) -> set[str]:
    """Returns the distribution names of PEP 508 requirement strings, lowercased."""
    return {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in requirements}


def test_runtime_dependencies_leave_out_scikit_learn():
    # Only a test and a benchmark script import sklearn, never the pipeline.
    assert "scikit-learn" not in _names(_project()["dependencies"])


def test_test_extra_has_scikit_learn():
    assert "scikit-learn" in _names(_project()["optional-dependencies"]["test"])


def test_bench_extra_has_scikit_learn():
    assert "scikit-learn" in _names(_project()["optional-dependencies"]["bench"])


def test_lock_pins_scikit_learn():
    # `make venv` installs requirements.lock with --no-deps and no extras, so
    # the test suite gets scikit-learn only if the lock pins it.
    with open(os.path.join(REPO, "requirements.lock"), encoding="utf-8") as f:
        pins = [line.split("==")[0].lower() for line in f if "==" in line]
    assert "scikit-learn" in pins
