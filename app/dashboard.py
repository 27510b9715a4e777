"""The web dashboard's files and ``gatebot dashboard STATE_DIR``: the same GETs as the bot's API, read from
the journals when the bot is not running (every POST answered 409), on 127.0.0.1, behind the same token.

The page (app/dashboard/: index.html, app.js, style.css and the vendored chart library) holds no data and no
secret, so ``/`` and ``/static/*`` are served without a token: the browser opens ``/#token=...`` and the page
sends the token from the fragment (never sent to a server by the browser) with each API request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import secrets
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from gatebot.app import views
from gatebot.app.exit_codes import EXIT_BAD_INPUT
from gatebot.core.clock import LiveClock
from gatebot.core.journal import Journal, JournalError

STATIC_DIR = Path(__file__).with_name("dashboard")
"""index.html, app.js, style.css, vendor/ (installed as package data of gatebot.app)."""

TOKEN_ENV = "GATEBOT_API_TOKEN"
READ_ONLY = "read-only dashboard: the bot is not running"
EVENTS_PERIOD_S = 1.0
"""How often the read-only server looks whether a journal moved (a snapshot goes out only when one did)."""

_json = msgspec.json.Encoder(decimal_format="string")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(data), status=status, content_type="application/json")


def token_from(token_file: Path | None) -> str | None:
    """The API token: GATEBOT_API_TOKEN, else ``token_file`` (refused unless only its owner can read it)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if token_file is None:
        return None
    try:
        mode = token_file.stat().st_mode
        text = token_file.read_text().strip()
    except OSError as exc:
        raise ValueError(f"token file {token_file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"token file {token_file}: readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    if not text:
        raise ValueError(f"token file {token_file}: empty")
    return text


def auth_middleware(token: str) -> Any:
    """Every /api request carries the token (Bearer, or ``?token=`` where EventSource cannot set headers),
    compared in constant time; a refusal never echoes what was sent."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if given is None and request.method == "GET" and request.path == "/api/events":
            given = request.query.get("token")
        if given is None:
            return json_response({"error": "missing token (Authorization: Bearer <token>)"}, 401)
        if not hmac.compare_digest(given.encode(), expected):
            return json_response({"error": "wrong token"}, 401)
        return await handler(request)

    return check


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def add_static(app: web.Application) -> None:
    """GET / and /static/<file>: the page, for the bot's API server and the read-only one alike."""
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR)


class JournalSource:
    """The read model of a state folder's journals, each opened read-only for the one request that reads it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def paths(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.state_dir.glob("*.sqlite"))}

    def read(self, name: str, fn: Callable[[Journal], Any]) -> Any:
        path = self.paths().get(name)
        if path is None:
            raise web.HTTPNotFound(text=_json.encode({"error": f"no instance {name!r}"}).decode(),
                                   content_type="application/json")
        journal = Journal(path, readonly=True)
        try:
            return fn(journal)
        finally:
            journal.close()

    def instances(self) -> list[dict[str, Any]]:
        out = []
        for name in self.paths():
            with contextlib.suppress(JournalError):  # a damaged journal is left out, not a failed page
                out.append(self.read(name, views.instance_view))
        return out

    def moved(self) -> list[Any]:
        """Each journal's high-water marks: a change means a snapshot to push."""
        marks: list[Any] = []
        for name in self.paths():
            with contextlib.suppress(JournalError):
                marks.append((name, self.read(name, lambda j: j.high_water())))
        return marks


def _limit(request: web.Request, default: int) -> int:
    try:
        return max(1, min(10_000, int(request.query.get("limit", default))))
    except ValueError:
        raise web.HTTPBadRequest(text=_json.encode({"error": "limit: not an integer"}).decode(),
                                 content_type="application/json") from None


def read_only_app(state_dir: Path, token: str) -> web.Application:
    """The read-only server's application (also what its tests start)."""
    source = JournalSource(state_dir)
    started_ms = LiveClock().now_ms()
    app = web.Application(middlewares=[auth_middleware(token)])

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok", "started_ms": started_ms, "instances": len(source.paths()),
                              "read_only": True})

    async def instances(request: web.Request) -> web.Response:
        return json_response(source.instances())

    async def instance(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return json_response(source.read(name, lambda j: views.instance_view(j) | {
            "working_orders": views.working_orders(j)}))

    async def candles(request: web.Request) -> web.Response:
        source.read(request.match_info["name"], lambda j: None)  # 404 for an unknown instance
        _limit(request, 500)
        return json_response([])  # journals hold no candles: the page draws the trades' prices instead

    async def trades(request: web.Request) -> web.Response:
        return json_response(source.read(request.match_info["name"], views.trade_marks))

    async def equity(request: web.Request) -> web.Response:
        return json_response(source.read(request.match_info["name"], views.equity))

    async def transitions(request: web.Request) -> web.Response:
        limit = _limit(request, 100)
        return json_response(source.read(request.match_info["name"], lambda j: views.transitions(j, limit)))

    async def refuse(request: web.Request) -> web.Response:
        return json_response({"error": READ_ONLY}, 409)

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        seen: list[Any] | None = None
        while True:
            marks = source.moved()
            if marks != seen:
                seen = marks
                await resp.write(b"event: snapshot\ndata: " + _json.encode(source.instances()) + b"\n\n")
            else:
                await resp.write(b": idle\n\n")  # a gone reader shows here and ends the stream
            await asyncio.sleep(EVENTS_PERIOD_S)

    app.router.add_get("/api/health", health)
    app.router.add_get("/api/instances", instances)
    app.router.add_get("/api/instances/{name}", instance)
    app.router.add_get("/api/instances/{name}/candles", candles)
    app.router.add_get("/api/instances/{name}/trades", trades)
    app.router.add_get("/api/instances/{name}/equity", equity)
    app.router.add_get("/api/instances/{name}/transitions", transitions)
    app.router.add_post("/api/instances/{name}/{command:close|pause|resume|halt}", refuse)
    app.router.add_post("/api/flatten", refuse)
    app.router.add_get("/api/events", events)
    add_static(app)
    return app


def dashboard_url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/#token={token}"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="the web dashboard, read-only from STATE_DIR's journals (the bot not running)")
    p.add_argument("state_dir", type=Path)
    p.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (0: any free one; default 8787)")
    p.add_argument("--token-file", type=Path,
                   help=f"a 0600 file holding the token (default: ${TOKEN_ENV}, else a new one, printed in the URL)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve STATE_DIR read-only until interrupted; the URL printed carries the token in its fragment."""
    from gatebot.app.cli import journal_paths

    journal_paths(args.state_dir)  # no folder or no journal: JournalError, exit status 2
    try:
        token = token_from(args.token_file) or secrets.token_urlsafe(24)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_serve(read_only_app(args.state_dir, token), args.port, token))
    except KeyboardInterrupt:  # Ctrl-C is how it ends
        return 0


async def _serve(app: web.Application, port: int, token: str) -> int:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"error: dashboard: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # port 0: the one given
    print(f"dashboard (read-only): {dashboard_url(bound, token)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0
