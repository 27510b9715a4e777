"""``gatebot dashboard STATE_DIR``: the web dashboard of a stopped bot, read-only from its journals.

The bot's own API server (app/api.py) over its journal backend: the same GETs as a running bot's, every POST
answered 409, on 127.0.0.1 alone, behind a token (GATEBOT_API_TOKEN, a 0600 ``--token-file``, else one made
for this run). The URL printed carries the token in its fragment (``/#token=...``), which a browser never sends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from gatebot.app.api import TOKEN_ENV, Api, JournalBackend, Token, load_token
from gatebot.core.clock import LiveClock
from gatebot.core.config import ApiConfig


def dashboard_url(base: str, token: Token) -> str:
    """The page's address with the token in the fragment (the page reads it from there)."""
    return f"{base}/#token={token.value}"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="the web dashboard, read-only from STATE_DIR's journals (bot not running)")
    p.add_argument("state_dir", type=Path)
    p.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (0: any free one; default 8787)")
    p.add_argument("--token-file", type=Path,
                   help=f"a 0600 file holding the token (default: ${TOKEN_ENV}, else one made for this run)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve STATE_DIR read-only until interrupted (Ctrl-C or SIGTERM end it, status 0)."""
    from gatebot.app.cli import journal_paths

    journal_paths(args.state_dir)  # no folder or no journal: JournalError, exit status 2
    if args.token_file is not None or os.environ.get(TOKEN_ENV):  # a bad token file: ConfigError, status 2
        token = load_token(ApiConfig(token_file=str(args.token_file) if args.token_file else None), args.state_dir)
    else:  # never written to the state dir of a bot that may start on it
        token = Token(secrets.token_urlsafe(32), "generated")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.state_dir, token, args.port))
    return 0


async def _serve(state_dir: Path, token: Token, port: int) -> None:
    api = Api(JournalBackend(state_dir), token, started_ms=LiveClock().now_ms())
    base = await api.start("127.0.0.1", port)  # a port in use: ConfigError, exit status 2
    print(f"dashboard (read-only): {dashboard_url(base, token)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await api.stop()
        sys.stdout.flush()
