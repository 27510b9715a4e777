"""Fixtures shared by every kind of test (each folder's conftest.py adds its own)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import write_paper_session

PaperSession = Callable[..., Path]
"""The ``paper_session`` fixture: :func:`tests.helpers.write_paper_session` in the test's ``tmp_path``."""


@pytest.fixture
def paper_session(tmp_path: Path) -> PaperSession:
    """Write a paper session of generated candles under ``tmp_path`` and return its config's path:
    ``paper_session(bars=200, speed=3000.0)`` (the keywords of :func:`tests.helpers.write_paper_session`)."""
    return functools.partial(write_paper_session, tmp_path)
