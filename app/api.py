"""The operator's HTTP API inside the bot process (docs/api.md), on the bot's own event loop.

aiohttp's server with msgspec JSON. Every request carries the token (``Authorization: Bearer``; the page,
its assets and the event stream may take ``?token=``, as an EventSource cannot set headers), compared in
constant time; the token is never echoed, logged (no access log: a query string may hold it) or written
but to a 0600 file. It binds loopback unless ``[api] allow_remote`` and a token of the operator's own
(env GATEBOT_API_TOKEN or ``token_file``) say otherwise. The views come from the live runner (mark, unrealized
PnL, working orders, candles) over the journal-derived ones of app/views.py; the commands go through
app/control.py. :class:`JournalBackend` serves the same reads from a stopped bot's journals, read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from gatebot.app import control, metrics, views
from gatebot.app.operator import TOKEN_ENV, URL_FILE
from gatebot.core.config import ApiConfig, ConfigError
from gatebot.core.instrument import to_decimal
from gatebot.core.journal import Journal, JournalError
from gatebot.core.position import PositionRecord

if TYPE_CHECKING:
    from gatebot.app.runner import Runner

log = logging.getLogger("gatebot.api")

TOKEN_FILE = "api.token"
"""A token made for this run (none configured), mode 0600, in the state dir."""
STATIC_DIR = Path(__file__).parent / "dashboard"
READ_ONLY = "read-only dashboard: the bot is not running"
EVENT_PERIOD_S = 1.0
"""The event stream looks for a change at most this often (and at once after a command)."""
_enc = msgspec.json.Encoder(decimal_format="string")


class Token(msgspec.Struct, frozen=True):
    value: str
    where: str
    """"env", the token file's path, or "generated"."""
    file: str | None = None

    def __repr__(self) -> str:  # never the value
        return f"Token(where={self.where!r})"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(cfg: ApiConfig, state_dir: Path, env: dict[str, str] | None = None) -> Token:
    """The token the API checks, and the refusals of an unsafe set-up, each one line (ConfigError): a token
    file another user may read, a non-loopback host without ``allow_remote`` or without a token of the
    operator's own."""
    env = dict(os.environ) if env is None else env
    remote = not _loopback(cfg.host)
    if remote and not cfg.allow_remote:
        raise ConfigError(f"[api] host = {cfg.host!r} is not loopback: that needs allow_remote = true (and a token "
                          f"from {TOKEN_ENV} or token_file)")
    if cfg.token_file:
        path = Path(cfg.token_file)
        try:
            st = path.stat()
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise ConfigError(f"[api] token_file {path} has mode {stat.S_IMODE(st.st_mode):04o}: it must be "
                                  f"readable by its owner alone (chmod 600 {path})")
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"[api] token_file {path} cannot be read: {exc.strerror or exc}") from None
        if not value:
            raise ConfigError(f"[api] token_file {path} is empty")
        return Token(value, str(path), str(path))
    if env.get(TOKEN_ENV):
        return Token(env[TOKEN_ENV], "env")
    if remote:
        raise ConfigError(f"[api] host = {cfg.host!r} is not loopback: it needs a token of your own ({TOKEN_ENV} "
                          "or token_file), not one made per run")
    path = state_dir / TOKEN_FILE
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(value)
    return Token(value, "generated", str(path))


# --- where the views come from ----------------------------------------------------------------


class LiveBackend:
    """The running bot: its runner's instances, engines and journals."""

    read_only = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._views: dict[str, views.JournalViews] = {}

    def views(self, name: str) -> views.JournalViews:
        """The incremental views of ``name``'s open journal (made again when the journal was reopened)."""
        journal = self._journal(name)
        v = self._views.get(name)
        if v is None or v.journal is not journal:
            v = self._views[name] = views.JournalViews(journal)
        return v

    def names(self) -> list[str]:
        return [i.cfg.name for i in self.runner.instances]

    def _journal(self, name: str) -> Journal:
        journal = self.runner.journals.get(name)
        if journal is None or journal.conn is None:
            raise LookupError(f"instance {name} has no open journal yet (still starting)")
        return journal

    def instance(self, name: str, *, detail: bool = False) -> dict[str, Any]:
        inst = self.runner.instance(name)
        journal = self.runner.journals.get(name)
        engine = inst.engine
        if journal is None or journal.conn is None:
            return _starting(inst)
        rec = engine.pos.rec if engine is not None else None
        mark = to_decimal(engine.last_close) if engine is not None and engine.last_close else None
        trading = "halted" if inst.halted is not None else engine.trading_state if engine is not None else None
        v = self.views(name)
        out = v.instance(rec=rec, trading_state=trading, mark=mark)
        out |= {"name": name, "strategy": inst.cfg.strategy, "exchange": inst.cfg.exchange, "symbol": inst.cfg.symbol}
        if detail:
            out["working_orders"] = v.working_orders(rec or journal.fold() or PositionRecord())
        return out

    def candles(self, name: str, limit: int) -> list[dict[str, Any]]:
        cfg = self.runner.instance(name).cfg
        rows = self.runner.history(cfg.symbol, cfg.interval)[-limit:]
        return [{"time_ms": c.open_time, "open": views.plain(to_decimal(c.open)),
                 "high": views.plain(to_decimal(c.high)), "low": views.plain(to_decimal(c.low)),
                 "close": views.plain(to_decimal(c.close)), "volume": views.plain(to_decimal(c.volume))}
                for c in rows]

    def journal_view(self, name: str, view: Callable[[views.JournalViews], Any]) -> Any:
        self.runner.instance(name)
        return view(self.views(name))

    def command(self, name: str, command: str, source: str, reason: str) -> str:
        return control.apply(self.runner, name, command, source=source, reason=reason)

    def flatten(self, source: str, reason: str) -> dict[str, tuple[bool, str]]:
        return control.flatten(self.runner, source=source, reason=reason)


def _starting(inst: Any) -> dict[str, Any]:
    cfg = inst.cfg
    return {"name": cfg.name, "strategy": cfg.strategy, "exchange": cfg.exchange, "symbol": cfg.symbol,
            "position_state": "recovering", "trading_state": "halted" if inst.halted else "active",
            "position": None, "balance": None, "realized_pnl": None, "fees": None, "funding": None}


class JournalBackend:
    """A stopped bot: the journals of a state dir, each opened read-only per request."""

    read_only = True

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.state_dir.glob("*.sqlite"))

    def _open(self, name: str) -> Journal:
        path = self.state_dir / f"{name}.sqlite"
        if name not in self.names():
            raise KeyError(name)
        return Journal(path, readonly=True)

    def journal_view(self, name: str, view: Callable[[views.JournalViews], Any]) -> Any:
        journal = self._open(name)
        try:
            return view(views.JournalViews(journal))
        finally:
            journal.close()

    def instance(self, name: str, *, detail: bool = False) -> dict[str, Any]:
        def one(v: views.JournalViews) -> dict[str, Any]:
            out = v.instance()
            if detail:
                out["working_orders"] = v.working_orders(v.journal.fold() or PositionRecord())
            return out

        return self.journal_view(name, one)  # type: ignore[no-any-return]

    def candles(self, name: str, limit: int) -> list[dict[str, Any]]:
        self._open(name).close()
        return []  # the journals keep no candles

    def command(self, name: str, command: str, source: str, reason: str) -> str:
        raise control.Refused(READ_ONLY)

    def flatten(self, source: str, reason: str) -> dict[str, tuple[bool, str]]:
        raise control.Refused(READ_ONLY)


Backend = LiveBackend | JournalBackend


# --- the server ---------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


_QUERY_TOKEN_OK = ("/", "/api/events")


class Api:
    """The aiohttp application over a backend, started on the running loop by :meth:`start`."""

    def __init__(self, backend: Backend, token: Token, *, started_ms: int) -> None:
        self.backend = backend
        self.token = token
        self.started_ms = started_ms
        self.changed = asyncio.Event()
        """Set after a command: the event streams send their next snapshot at once."""
        self._closing = asyncio.Event()
        self._site_runner: web.AppRunner | None = None
        self.url: str | None = None
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/health", self._health)
        app.router.add_get("/api/instances", self._instances)
        app.router.add_get("/api/instances/{name}", self._instance)
        app.router.add_get("/api/instances/{name}/candles", self._candles)
        app.router.add_get("/api/instances/{name}/trades", self._view(views.JournalViews.trades))
        app.router.add_get("/api/instances/{name}/equity", self._view(views.JournalViews.equity))
        app.router.add_get("/api/instances/{name}/transitions", self._transitions)
        app.router.add_post("/api/instances/{name}/{command}", self._command)
        app.router.add_post("/api/flatten", self._flatten)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{file:.+}", self._static)
        self.app = app

    # --- lifecycle ---

    async def start(self, host: str, port: int) -> str:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"[api] cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._site_runner = runner
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None

    # --- auth ---

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.method == "GET" and (request.path == "/" or request.path.startswith("/static/")):
            return await handler(request)  # the page holds no data: the browser opens /#token=..., the page sends it
        given = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:].strip()
        elif request.method == "GET" and (request.path in _QUERY_TOKEN_OK or request.path.startswith("/static/")):
            given = request.query.get("token", "")
        if not given:
            return _error(401, "a token is required (Authorization: Bearer <token>)")
        if not hmac.compare_digest(given.encode(), self.token.value.encode()):
            return _error(401, "wrong token")
        try:
            return await handler(request)
        except KeyError:
            return _error(404, f"no instance {request.match_info.get('name', '')!r}")
        except (LookupError, JournalError) as exc:
            return _error(503, str(exc))

    # --- reads ---

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "started_ms": self.started_ms, "instances": len(self.backend.names()),
                      "read_only": self.backend.read_only})

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.backend.instance(n) for n in self.backend.names()]

    async def _instances(self, request: web.Request) -> web.Response:
        return _json(self.snapshot())

    async def _instance(self, request: web.Request) -> web.Response:
        return _json(self.backend.instance(request.match_info["name"], detail=True))

    async def _candles(self, request: web.Request) -> web.Response:
        limit = _limit(request, 500)
        if isinstance(limit, web.Response):
            return limit
        return _json(self.backend.candles(request.match_info["name"], limit))

    async def _transitions(self, request: web.Request) -> web.Response:
        limit = _limit(request, 50)
        if isinstance(limit, web.Response):
            return limit
        return _json(self.backend.journal_view(request.match_info["name"],
                                               lambda v: views.transitions(v.journal, limit)))

    def _view(self, view: Callable[[views.JournalViews], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return _json(self.backend.journal_view(request.match_info["name"], view))

        return handler

    # --- commands ---

    async def _body_reason(self, request: web.Request) -> str | web.Response:
        if not request.can_read_body:
            return ""
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON (expected {\"reason\": \"...\"})")
        reason = body.get("reason", "") if isinstance(body, dict) else None
        if not isinstance(reason, str):
            return _error(400, "reason must be a string")
        return " ".join(reason.split())[:200]  # one line in the journal and the log

    @staticmethod
    def _source(request: web.Request) -> str:
        who = "cli" if request.headers.get("User-Agent", "").startswith("gatebot-cli") else "api"
        return f"{who}@{request.remote or '?'}"

    async def _command(self, request: web.Request) -> web.Response:
        command = request.match_info["command"]
        if command not in control.COMMANDS:
            return _error(404, f"no command {command!r} (known: {', '.join(control.COMMANDS)})")
        reason = await self._body_reason(request)
        if isinstance(reason, web.Response):
            return reason
        try:
            message = self.backend.command(request.match_info["name"], command, self._source(request), reason)
        except control.Refused as exc:
            return _error(409, str(exc))
        self.changed.set()
        return _json({"ok": True, "message": message})

    async def _flatten(self, request: web.Request) -> web.Response:
        reason = await self._body_reason(request)
        if isinstance(reason, web.Response):
            return reason
        try:
            results = self.backend.flatten(self._source(request), reason)
        except control.Refused as exc:
            return _error(409, str(exc))
        self.changed.set()
        return _json({"results": {name: {"ok": ok, "message" if ok else "error": text}
                                  for name, (ok, text) in results.items()}})

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus's text format of the runner's registry (app/metrics.py); a stopped bot has none."""
        runner = getattr(self.backend, "runner", None)
        if runner is None:
            return _error(404, READ_ONLY + ": no metrics")
        return web.Response(body=runner.metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})

    # --- the event stream and the page ---

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """A snapshot at once, then whenever it changed (looked at every EVENT_PERIOD_S, and at once after a
        command): transitions, fills and marks reach the page within a second, never more often."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        last = b""
        while not self._closing.is_set():
            data = _enc.encode(self.snapshot())
            if data != last:
                try:
                    await resp.write(b"event: snapshot\ndata: " + data + b"\n\n")
                except (ConnectionResetError, RuntimeError):
                    break
                last = data
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(self.changed, self._closing), EVENT_PERIOD_S)
        return resp

    async def _index(self, request: web.Request) -> web.StreamResponse:
        path = STATIC_DIR / "index.html"
        if not path.is_file():
            return _error(404, "no dashboard page in this build")
        return web.FileResponse(path)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        root = (STATIC_DIR / "static").resolve()
        path = (root / request.match_info["file"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return _error(404, "no such file")
        return web.FileResponse(path)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _limit(request: web.Request, default: int) -> int | web.Response:
    text = request.query.get("limit", str(default))
    if not text.isdigit() or not 0 < int(text) <= 10_000:
        return _error(400, f"limit must be a whole number from 1 to 10000, not {text!r}")
    return int(text)


# --- in the bot --------------------------------------------------------------------------------


async def serve(runner: Runner) -> Api:
    """Start the API of ``runner`` (its [api] table) and write its URL file; :func:`unserve` undoes both."""
    cfg = runner.config.api
    state_dir = runner.state_dir
    token = load_token(cfg, state_dir)
    api = Api(LiveBackend(runner), token, started_ms=runner.clock.now_ms())
    url = await api.start(cfg.host, cfg.port)
    info = {"url": url, "pid": os.getpid(), "token_file": token.file, "token_env": TOKEN_ENV}
    tmp = state_dir / (URL_FILE + ".new")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, state_dir / URL_FILE)
    log.info("control API on %s (token: %s)", url, "the env " + TOKEN_ENV if token.where == "env"
                else token.file)
    if token.where == "generated":  # the operator cannot know it otherwise: on the terminal, never in a log
        print(f"dashboard: {url}/#token={token.value}", file=sys.stderr, flush=True)
    else:
        print(f"dashboard: {url}/#token=<your token>", file=sys.stderr, flush=True)
    return api


async def unserve(api: Api, state_dir: Path) -> None:
    await api.stop()
    (state_dir / URL_FILE).unlink(missing_ok=True)
    if api.token.where == "generated" and api.token.file:
        Path(api.token.file).unlink(missing_ok=True)


async def serve_read_only(state_dir: Path, port: int, stop: asyncio.Event) -> None:
    """``gatebot dashboard STATE_DIR``: the same reads from a stopped bot's journals, on loopback, until ``stop``."""
    token = load_token(ApiConfig(port=port), state_dir)
    api = Api(JournalBackend(state_dir), token, started_ms=int(time.time() * 1000))
    url = await api.start("127.0.0.1", port)
    shown = token.value if token.where == "generated" else "<your token>"
    print(f"dashboard (read-only): {url}/#token={shown}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await api.stop()
        if token.where == "generated" and token.file:
            Path(token.file).unlink(missing_ok=True)
