"""Fixtures of the integration tests."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.integration.sessions import BingXSession, session


@pytest.fixture
def bingx_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BingXSession:
    """Start the bot on a BingX simulator on loopback: ``async with bingx_session(**options) as s`` (the
    keywords of :func:`tests.integration.sessions.session`); its files under ``tmp_path``."""
    return functools.partial(session, tmp_path, monkeypatch)
