"""Errors of the data layer."""

from __future__ import annotations

__all__ = ["DatasetNotFoundError", "make_command"]


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is not on this machine (nothing is ever downloaded silently)."""


def make_command(catalogue_name: str) -> str:
    """The command that makes the local dataset of a catalogue entry."""
    return f"python scripts/make_dataset.py env={catalogue_name}"
