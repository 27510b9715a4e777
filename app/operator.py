"""The operator's CLI: ``close INSTANCE``, ``pause``, ``resume``, ``halt`` and ``flatten`` sent to the running bot
through its API, and ``status``: asked of the running bot when it serves one, read from the journals when not.

The bot writes ``<state_dir>/api.json`` (its URL and where its token is, never the token) while it serves; the
token comes from GATEBOT_API_TOKEN or the file named there. A bot that is not running (no file, or a file left by
a killed one that no longer answers) is said in one line; ``status`` then reads the journals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from gatebot.app import views
from gatebot.app.exit_codes import EXIT_BAD_INPUT
from gatebot.core.journal import Journal, JournalError

TOKEN_ENV = "GATEBOT_API_TOKEN"
URL_FILE = "api.json"
"""In the state dir while the bot serves: its URL and where its token is (never the token)."""
TIMEOUT_S = 10.0
STATUS_TRANSITIONS = 5


class NotServing(Exception):
    """No running bot answers on this state dir (the message says why, in one line)."""


def add_parsers(sub: Any) -> None:
    """The control commands on the CLI's one parser."""
    for command, help_ in (("close", "close INSTANCE's position at market now (the bot must be running)"),
                           ("pause", "no new entries for INSTANCE; exits, stops and recovery go on"),
                           ("resume", "INSTANCE trades again (after pause or halt)"),
                           ("halt", "INSTANCE sends no new orders at all; its exchange stop stays")):
        p = sub.add_parser(command, help=help_)
        p.add_argument("instance")
        p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
        p.add_argument("--reason", default="", help="why (journaled with the command)")
        p.set_defaults(func=lambda args, command=command: command_cmd(args, command))
    p = sub.add_parser("dashboard", help="serve the dashboard and API read-only from STATE_DIR's journals (the bot "
                                         "not running), on 127.0.0.1, until Ctrl-C")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p.add_argument("--port", type=int, default=8787, help="0: any free port")
    p.set_defaults(func=dashboard_cmd)
    p = sub.add_parser("flatten", help="pause every instance and close its position (the bot must be running)")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p.add_argument("--reason", default="")
    p.set_defaults(func=flatten_cmd)


# --- the client ------------------------------------------------------------------------------------


def _client(state_dir: Path) -> tuple[str, str]:
    """(URL, token) of the bot serving ``state_dir``; NotServing when none does."""
    path = state_dir / URL_FILE
    try:
        info = json.loads(path.read_text())
        url = str(info["url"])
    except FileNotFoundError:
        raise NotServing(f"no running gatebot serves {state_dir} (no {URL_FILE}: is it running, with [api] "
                         "enabled = true?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotServing(f"{path} is unreadable ({exc})") from None
    token = os.environ.get(TOKEN_ENV, "")
    if not token and info.get("token_file"):
        try:
            token = Path(info["token_file"]).read_text().strip()
        except OSError as exc:
            raise NotServing(f"the API token file {info['token_file']} cannot be read: {exc.strerror or exc}") from None
    if not token:
        raise NotServing(f"no API token: set {TOKEN_ENV}")
    return url, token


def call(state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request to the bot's API: (HTTP status, decoded JSON)."""
    url, token = _client(state_dir)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "User-Agent": f"gatebot-cli/{version('gatebot')}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotServing(f"the gatebot API at {url} does not answer ({reason}): is the bot running?") from None


def command_cmd(args: argparse.Namespace, command: str) -> int:
    try:
        status, data = call(args.state_dir, "POST", f"/api/instances/{args.instance}/{command}",
                            {"reason": args.reason})
    except NotServing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if status == 200:
        print(data["message"])
        return 0
    print(f"error: {command} {args.instance}: {data.get('error', status)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def flatten_cmd(args: argparse.Namespace) -> int:
    try:
        status, data = call(args.state_dir, "POST", "/api/flatten", {"reason": args.reason})
    except NotServing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if status != 200:
        print(f"error: flatten: {data.get('error', status)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failed = 0
    for name, r in data["results"].items():
        if r["ok"]:
            print(r["message"])
        else:
            failed += 1
            print(f"error: {name}: {r['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


# --- status ------------------------------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _reconciled_line(row: str | None) -> str:
    """When recovery last made every intent definite (the engine's meta row ``reconciled``)."""
    if row is None:
        return "not reconciled yet"
    r = json.loads(row)
    return (f"reconciled {_when(r['ts_ms'])} ({r['state']}; {r['intents']} intents in {r['rounds']} round(s), "
            f"{r['took_ms']} ms)")


def status_cmd(state_dir: Path, paths: list[Path]) -> int:
    """Each instance: its state, position (open time, entry, mark, unrealized PnL), stop (price, id), balance,
    trading state and last transitions with their times; live from the bot's API when it serves one (mark and
    unrealized PnL are known only there), else from the journals alone."""
    live: dict[str, dict[str, Any]] = {}
    try:
        code, data = call(state_dir, "GET", "/api/instances")
        if code == 200:
            live = {i["name"]: i for i in data}
            source = f"live from the running bot ({_client(state_dir)[0]})"
        else:
            source = f"from the journals (the bot's API said: {data.get('error', code)})"
    except NotServing as exc:
        source = f"from the journals ({exc})"
    damaged = 0
    for path in paths:
        try:
            journal = Journal(path, readonly=True)
        except JournalError as exc:
            print(f"{path.stem}: ERROR {exc}")
            damaged += 1
            continue
        try:
            _print_instance(path.stem, journal, live)
        except JournalError as exc:
            print(f"{path.stem}: ERROR {exc}")
            damaged += 1
        finally:
            journal.close()
    print(f"({source})")
    return EXIT_BAD_INPUT if damaged else 0


def _print_instance(stem: str, journal: Journal, live: dict[str, dict[str, Any]]) -> None:
    rec = journal.fold()
    name = journal.meta().get("instance", stem)
    view = live.get(name) or views.instance(journal)
    trading = view["trading_state"]
    if rec is None:
        print(f"{stem}: flat (no transitions yet)  trading {trading}")
    else:
        pos = f"{rec.side} {views.plain(rec.open_qty)} @ {rec.avg_entry:.2f}" if rec.side else "none"
        stop = views.plain(rec.stop_price) if rec.stop_price else "-"
        print(f"{stem}: {view['position_state']}  position {rec.seq}: {pos}  stop {stop}"
              f" ({rec.stop_id or 'none'})  trading {trading}")
    p = view.get("position")
    if p is not None:
        print(f"    opened {_when(p['opened_ms'])}  entry {p['entry_price']}  mark {p['mark_price'] or '-'}"
              f"  unrealized {p['unrealized_pnl'] or '-'}")
    print(f"    balance {view['balance']}  realized {view['realized_pnl']}  fees {view['fees']}"
          f"  funding {view['funding']}")
    for t in journal.last_transitions(STATUS_TRANSITIONS):
        print(f"    {_when(t['ts'])}  #{t['seq']} pos {t['position']}: {t['src']} --{t['trigger']}--> {t['dst']}")
    for c in journal.controls(3):
        print(f"    {_when(c['ts_ms'])}  {c['command']} by {c['source']} ({c['reason'] or 'no reason'}): "
              f"{c['trading_state']}")
    print(f"    {_reconciled_line(journal.meta().get('reconciled'))}")


def dashboard_cmd(args: argparse.Namespace) -> int:
    """The read-only server; refused (2) on a state dir a running bot serves (its own API is the live one)."""
    import asyncio
    import signal

    from gatebot.app.api import serve_read_only

    state_dir: Path = args.state_dir
    if not state_dir.is_dir() or not any(state_dir.glob("*.sqlite")):
        print(f"error: no journals in {state_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (state_dir / URL_FILE).exists():
        try:
            call(state_dir, "GET", "/api/health")
            print(f"error: a running gatebot serves {state_dir}: open its own dashboard", file=sys.stderr)
            return EXIT_BAD_INPUT
        except NotServing:
            pass  # left by a bot that was killed

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_read_only(state_dir, args.port, stop)

    asyncio.run(go())
    return 0
