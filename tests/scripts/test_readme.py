"""What README.md tells a user to run exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_pytest_marker_the_readme_names_selects_some_test():
    """`python -m pytest -m <marker>` in README.md runs something (a marker no test carries collects nothing and
    exits with status 5), and the marker is declared in pyproject.toml."""
    readme = (ROOT / "README.md").read_text()
    markers = set(re.findall(r"pytest[^`]*?-m (\w+)", readme)) | set(re.findall(r"`-m (\w+)`", readme))
    assert markers, "README.md names no `pytest -m <marker>` command"
    declared = (ROOT / "pyproject.toml").read_text()
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
    for marker in sorted(markers):
        assert re.search(rf'^\s*"{marker}:', declared, re.MULTILINE), f"marker {marker!r} is not declared in pyproject.toml"
        assert any(f"pytest.mark.{marker}" in text for text in sources), (
            f"README.md runs `pytest -m {marker}`, but no test is marked {marker}")
