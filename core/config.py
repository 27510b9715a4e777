"""TOML -> typed, validated configuration. Every error is one line naming the file and the key path.

The file is decoded by msgspec into Structs with ``forbid_unknown_fields``; what the schema cannot
say is checked after: references between tables (instance -> exchange, instance -> strategy), the
plugin-owned tables (``[exchanges.<name>.options]`` by the exchange plugin's ``Options``,
``[instances.params]`` by the strategy's ``Params``), unique names, one instance per symbol and
account unless the account runs in hedge mode. Secrets never live in a config file: a key that looks
like one is an error that says where secrets go. Relative paths are resolved against the folder of
the config file, so a config means the same thing from any working directory.
"""

from __future__ import annotations

import functools
import hashlib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gatebot.core.intervals import INTERVALS

Mode = Literal["paper", "replay", "live"]
Synchronous = Literal["OFF", "NORMAL", "FULL"]
Interval = Literal[INTERVALS]  # type: ignore[valid-type]
LIVE_FLAG = "--live"
"""``mode = "live"`` starts only with this command-line flag as well: two deliberate acts, not one."""

_SECRET_KEY = re.compile(r"(secret|api_?key|password|passphrase|private_?key|token)", re.IGNORECASE)
_SECRET_REFERENCE = re.compile(r"_(env|file)$")
SYMBOL_PATTERN = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,10}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,19}$"
_PATTERN_SENTENCES = {
    SYMBOL_PATTERN: "must be BASE-QUOTE in capital letters and digits, like BTC-USDT",
    NAME_PATTERN: "must be 1 to 20 lowercase letters, digits or _ (no -), starting with a letter or digit, like btc_5m",
}
"""What each pattern of the schema means, said to a user instead of the regular expression."""


class ConfigError(Exception):
    """One line: ``<file>: <key path>: <what is wrong>``."""

    def __init__(self, message: str) -> None:  # a key or value may hold a line break: it stays one line
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class JournalConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    synchronous: Synchronous | None = None
    """SQLite ``synchronous``; default FULL in paper and live, OFF in replay (a replay is re-runnable)."""
    group_commit: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    """Replay only: commit once per this many transitions (default 1000); paper and live commit each."""


class PluginsConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    modules: list[str] = []
    """Dotted module paths to load as plugins, in addition to the ``gatebot`` entry points."""
    disable: list[str] = []
    """Plugin names (entry-point names or module paths) not to load."""


class MarketConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where candles come from when no exchange streams them (replay and paper)."""

    source: Literal["generated", "csv"] = "generated"
    csv: str | None = None
    seed: int = 42
    bars: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 2000
    start_ms: Annotated[int, msgspec.Meta(ge=0)] = 1_735_689_600_000
    start_price: Annotated[float, msgspec.Meta(gt=0)] = 60_000.0
    volatility: Annotated[float, msgspec.Meta(gt=0, le=0.2)] = 0.002
    speed: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Paper mode: candles per candle-interval of wall time (0 = as fast as possible)."""
    max_gap_candles: Annotated[int, msgspec.Meta(ge=0)] = 10
    """A candle file (``csv`` or ``replay --candles``) missing more than this many candles in a row is refused;
    smaller gaps (and exactly repeated rows, dropped) are counted in the replay's output and journal meta."""


class ProtectionConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    leveraged_sl_pct: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.04
    """Loss at the stop as a share of margin: the stop sits ``leveraged_sl_pct / leverage`` from the fill."""
    leveraged_tp_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    """Profit at the take-profit as a share of margin: a reduce-only TAKE_PROFIT_MARKET ``leveraged_tp_pct /
    leverage`` from the fill, placed once the stop is confirmed; None (the default): no take-profit."""
    trailing_pct: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    """A trailing stop: after each candle the stop moves up to ``close x (1 - trailing_pct)`` (a long; a short's
    down to ``close x (1 + trailing_pct)``) when that is closer to the price than it is; never back. None: off."""
    break_even_at_pct: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    """Once a candle closes this share of the price in profit, the stop moves to the entry price. None: off."""
    protection_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    """How long a filled entry may wait for its stop to be confirmed before it is closed at market."""
    fill_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 3.0
    """An entry sent with no fill reported after this long is asked about (its fill push may be lost on a
    stream that went quiet): a market entry is never left unwatched."""
    on_foreign_position: Literal["adopt", "flatten", "halt"] = "halt"
    """A position on the symbol that the journal did not open (found while flat): ``halt`` (the default: it
    may be another bot's, and two owners of one position each place a stop and book the other's fills),
    or, as an explicit choice, ``adopt`` (journal it, protect it) or ``flatten`` (adopt, then close)."""
    stop_tolerance_pct: Annotated[float, msgspec.Meta(ge=0, le=0.05)] = 0.0002
    """An attached stop (priced from the last close) closer to the entry than the actual fill's stop by
    at most this share of the price is kept; a wider one is always replaced."""


class RiskConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The built-in risk guards of one instance or one account (app/risk_guard.py): a guard that trips pauses new
    entries (the ``reducing`` trading state, as ``gatebot pause``); stops and exits go on. Each limit is off when
    absent. Counted on closed positions (net of fees and funding), from the journal, since the last resume."""

    max_daily_loss_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    """Net loss of the positions closed this UTC day, in % of the equity at the day's start."""
    max_drawdown_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    """Fall of the equity from its peak, in % of the peak."""
    max_consecutive_stop_outs: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_trades_per_day: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Entries this UTC day: the one that reaches it is the last."""
    resume: Literal["next_utc_day", "operator"] = "operator"
    """How a tripped guard's pause ends: ``gatebot resume`` only, or also at the next UTC day (the bot's clock)."""


class ExchangeConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: str
    hedge_mode: bool = False
    options: Any = {}
    """Validated by the exchange plugin's ``Options`` Struct; holds an instance of it after loading."""
    market: str | None = None
    """A paper account only: the account (another exchange of this config, e.g. BingX) whose public market
    stream and klines feed it, paper trading on the live market. That account needs no credentials when no
    instance trades on it (its market alone is used)."""
    risk: RiskConfig | None = None
    """The account's risk guards (app/risk_guard.py): counted on the positions of every instance on this
    account together; a trip pauses the entries of them all."""


class InstanceConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    """Prefixes every client order id (``<name>-<epoch>-<seq>-<role><attempt>``, core/ids.py), hence short,
    plain and without ``-``."""
    exchange: str
    strategy: str
    symbol: Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
    interval: Interval
    leverage: Annotated[int, msgspec.Meta(ge=1, le=125)]
    params: Any = {}
    """Validated by the strategy's ``Params`` Struct; holds an instance of it after loading."""
    protection: ProtectionConfig = ProtectionConfig()
    risk: RiskConfig | None = None


class ApiConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The operator's control API inside the bot process (app/api.py)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    """0: any free port (the URL the runner writes to ``<state_dir>/api.json`` says which)."""
    token_file: str | None = None
    """A file (mode 0600) holding the token; else the env GATEBOT_API_TOKEN; else one is made per run."""
    allow_remote: bool = False
    """Required (with a token from the env or token_file) to bind anything but loopback."""


class NotifyConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How notifications are sent (app/notify.py); where to is never here: the targets' URLs hold tokens and come
    from the env GATEBOT_NOTIFY_URLS or a 0600 file named by GATEBOT_NOTIFY_URLS_FILE."""

    unprotected_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """Say so when a filled entry has waited this long for its stop."""
    stale_stream_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    """Say so when a stream has been silent this long."""
    daily_summary: bool = True
    max_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 20
    dedupe_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    """The same message again within this long is not sent."""
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3


class Config(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Mode = "paper"
    state_dir: str = "state"
    journal: JournalConfig = JournalConfig()
    plugins: PluginsConfig = PluginsConfig()
    market: MarketConfig | None = None
    exchanges: dict[str, ExchangeConfig] = {}
    instances: Annotated[list[InstanceConfig], msgspec.Meta(min_length=1)]
    api: ApiConfig = ApiConfig()
    notify: NotifyConfig = NotifyConfig()

    @property
    def journal_synchronous(self) -> Synchronous:
        if self.journal.synchronous is not None:
            return self.journal.synchronous
        return "OFF" if self.mode == "replay" else "FULL"

    @property
    def journal_group_commit(self) -> int:
        if self.mode != "replay":
            return 0
        return 1000 if self.journal.group_commit is None else self.journal.group_commit


def config_hash(config: Config) -> str:
    """Identifies the configuration a journal was written under (stored in its ``meta``). The operator plane's
    ``[api]`` is left out: where the dashboard listens says nothing about how the bot trades, and a session
    recorded with the API on replays as the same configuration with it off."""
    fields = msgspec.to_builtins(config)
    fields.pop("api", None)
    fields.pop("notify", None)  # like [api]: how the owner is told says nothing about how the bot trades
    for account in fields["exchanges"].values():
        if account.get("risk") is None:  # as for an instance's, below
            account.pop("risk", None)
    for inst in fields["instances"]:
        if inst.get("risk") is None:  # configs written before the risk guards hash as they did
            inst.pop("risk", None)
    return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()[:16]


def load_config(path: str | Path, *, allow_live: bool = False) -> Config:
    """Read, decode and check ``path``; raise ConfigError (one line) on anything wrong."""
    path = Path(path)
    return config_from(path, read_toml(path), allow_live=allow_live)


def read_toml(path: Path) -> dict[str, Any]:
    """The decoded TOML of a config file (a command with a table of its own, ``gatebot sweep``'s ``[sweep]``,
    takes it out before :func:`config_from` checks the rest); ConfigError when unreadable or not TOML."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # msgspec decodes the bytes first: not UTF-8 is not TOML
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text (byte {exc.start})") from None
    return raw


def config_from(path: Path, raw: dict[str, Any], *, allow_live: bool = False) -> Config:
    """The checked Config of ``raw`` (the decoded TOML of ``path``, which names the file in errors and anchors
    its relative paths)."""
    _refuse_secrets(path, raw, "$")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_keyed(path, exc, raw)) from exc
    return _resolve(path, config, allow_live)


def _keyed(path: Path, exc: msgspec.ValidationError, raw: dict[str, Any]) -> str:
    """:func:`_one_line`, naming the table: msgspec says ``$.exchanges[...]`` for an entry of a table of tables,
    so the entry at fault is found by converting each one alone (``$.exchanges.bingx.bogus``)."""
    at = str(exc).partition(" - at `$")[2]
    keyed = re.match(r"\.(\w+)\[\.\.\.\]", at)
    hint = typing.get_type_hints(Config).get(keyed.group(1)) if keyed else None
    if keyed and typing.get_origin(hint) is dict and isinstance(raw.get(keyed.group(1)), dict):
        for key, table in raw[keyed.group(1)].items():
            try:
                msgspec.convert(table, typing.get_args(hint)[1])
            except msgspec.ValidationError as inner:
                return _one_line(path, inner, f"$.{keyed.group(1)}.{key}", raw=table)
    return _one_line(path, exc, raw=raw)


def _one_line(path: Path, exc: msgspec.ValidationError, prefix: str = "$", raw: Any = None) -> str:
    """msgspec says "Expected `int`, got `str` - at `$.instances[0].leverage`"; we say the path first, and a
    pattern's meaning (with the value, from ``raw``) rather than its regular expression."""
    message, _, at = str(exc).partition(" - at `$")
    where = prefix + at.rstrip("`")
    pattern = re.fullmatch(r"Expected `str` matching regex '(.*)'", message)
    if pattern and pattern.group(1) in _PATTERN_SENTENCES:
        field = where.rpartition(".")[2]
        value = _at_path(raw, at.rstrip("`"))
        shown = f"{field} {value!r}" if isinstance(value, str) else field
        return f"{path}: {where}: {shown} {_PATTERN_SENTENCES[pattern.group(1)]}"
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message)
    if unknown:
        return f"{path}: {where}.{unknown.group(1)}: unknown field (not part of the schema; a typo?)"
    field = re.sub(r"\[\d+\]$", "", where).rpartition(".")[2]
    if message.startswith("Invalid enum value") and field in _choices():
        return f"{path}: {where}: {message} (valid: {', '.join(map(repr, _choices()[field]))})"
    return f"{path}: {where}: {message}"


def _at_path(node: Any, at: str) -> Any:
    """The value at a msgspec path tail (``.instances[0].symbol``) of the decoded TOML, or None."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", at):
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return node


@functools.cache
def _choices() -> dict[str, tuple[str, ...]]:
    """Each Literal-typed field of the config's structs by name, so an invalid enum's error lists the valid values."""
    found: dict[str, tuple[str, ...]] = {}
    for struct in [v for v in globals().values() if isinstance(v, type) and issubclass(v, msgspec.Struct)]:
        for name, hint in typing.get_type_hints(struct).items():
            if typing.get_origin(hint) is Literal:
                found[name] = typing.get_args(hint)
    return found


def _refuse_secrets(path: Path, node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if _SECRET_KEY.search(str(key)) and not _SECRET_REFERENCE.search(str(key)):
                raise ConfigError(f"{path}: {here}: looks like a secret; secrets never go in a config file: set "
                                  "them in environment variables (or a 0600 secrets file) and name those here "
                                  "with a key ending in _env or _file")
            _refuse_secrets(path, value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_secrets(path, value, f"{where}[{i}]")


class OptionFileError(ValueError):
    """A file an account's options name (relative to the config's folder) is missing or bad; ``field`` is where
    under the options it is named (``funding.csv``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _resolve_files(options: Any, base: Path, where: str, fail: Any) -> Any:
    """Options that name files resolve them against the config's folder (their ``resolve_files(base)``, e.g. a
    paper account's funding CSV), read now so that a missing or bad file is refused before anything starts."""
    resolve = getattr(options, "resolve_files", None)
    if resolve is None:
        return options
    try:
        return resolve(base)
    except OptionFileError as exc:
        raise fail(f"{where}.{exc.field}", str(exc)) from None


def _resolve(path: Path, config: Config, allow_live: bool) -> Config:
    from gatebot.plugins.manager import PluginError, make_plugin_manager

    base = path.resolve().parent

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {where}: {message}")

    if config.mode != "replay" and config.journal.group_commit:
        raise fail("$.journal.group_commit", "only a replay may group commits; paper and live commit every "
                                             "transition before its command is sent")
    if config.mode == "live" and not allow_live:
        raise fail("$.mode", f"mode = \"live\" trades real money: start it with the explicit flag {LIVE_FLAG}")
    try:
        plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable, folders=[base])
        exchange_types = plugins.exchanges()
        strategies = plugins.strategies()
    except PluginError as exc:
        raise fail("$.plugins", str(exc)) from exc

    traded = {i.exchange for i in config.instances}
    market_only = {ex.market for ex in config.exchanges.values() if ex.market} - traded
    for name, ex in config.exchanges.items():
        if ex.market is None:
            continue
        feed = config.exchanges.get(ex.market)
        if ex.type != "paper":
            raise fail(f"$.exchanges.{name}.market", "only a paper account takes its market from another account")
        if feed is None or feed.type == "paper" or feed.market is not None:
            raise fail(f"$.exchanges.{name}.market", f"{ex.market!r} is not an exchange of this config with a "
                                                     "market of its own (a paper account has none)")
    exchanges = {}
    for name, ex in config.exchanges.items():
        where = f"$.exchanges.{name}"
        plugin = exchange_types.get(ex.type)
        if plugin is None:
            known = ", ".join(sorted(exchange_types))
            raise fail(f"{where}.type", f"unknown exchange type {ex.type!r} (known: {known})")
        if config.mode == "replay" and ex.type != "paper":
            raise fail(f"{where}.type", "a replay runs on the paper exchange only")
        try:
            options = msgspec.convert(ex.options, plugin.Options)
        except msgspec.ValidationError as exc:
            raise ConfigError(_one_line(path, exc, f"{where}.options")) from exc
        if getattr(options, "real_money", False) and config.mode != "live" and name not in market_only:
            raise fail(f"{where}.options", f"this account trades real money; that needs mode = \"live\" (and "
                                           f"{LIVE_FLAG}), not mode = {config.mode!r}")
        options = _resolve_files(options, base, f"{where}.options", fail)
        exchanges[name] = msgspec.structs.replace(ex, options=options)

    instances = []
    seen: dict[str, int] = {}
    traded: dict[tuple[str, str], str] = {}
    leverages: dict[tuple[str, str], int] = {}
    for i, inst in enumerate(config.instances):
        where = f"$.instances[{i}]"
        if inst.name in seen:
            raise fail(f"{where}.name", f"duplicate instance name {inst.name!r} (also $.instances[{seen[inst.name]}])")
        seen[inst.name] = i
        if inst.exchange not in exchanges:
            have = ", ".join(sorted(exchanges)) or "none"
            raise fail(f"{where}.exchange", f"no exchange {inst.exchange!r} in [exchanges] (have: {have})")
        strategy = strategies.get(inst.strategy)
        if strategy is None:
            known = ", ".join(sorted(strategies))
            raise fail(f"{where}.strategy", f"unknown strategy {inst.strategy!r} (known: {known})")
        try:
            params = msgspec.convert(inst.params, strategy.Params)
        except msgspec.ValidationError as exc:
            raise ConfigError(_one_line(path, exc, f"{where}.params")) from exc
        key = (inst.exchange, inst.symbol)
        if key in traded and not exchanges[inst.exchange].hedge_mode:
            raise fail(where, f"instances {traded[key]!r} and {inst.name!r} both trade {inst.symbol} on account "
                              f"{inst.exchange!r}; that needs hedge_mode = true on [exchanges.{inst.exchange}]")
        if key in traded and leverages[key] != inst.leverage:  # one leverage per symbol: each would set it back
            raise fail(f"{where}.leverage", f"{inst.leverage}, but instance {traded[key]!r} trades {inst.symbol} on "
                                            f"account {inst.exchange!r} at {leverages[key]}: they share one leverage")
        traded[key] = inst.name
        leverages[key] = inst.leverage
        instances.append(msgspec.structs.replace(inst, params=params))

    def relative(where: str, text: str) -> Path:
        if "\x00" in text:  # the OS refuses such a name with a bare ValueError
            raise fail(where, "a path cannot contain a NUL character")
        return base / text

    market = config.market
    if market is not None and market.source == "csv":
        if not market.csv:
            raise fail("$.market.csv", "source = \"csv\" needs the path of a candle CSV")
        csv = relative("$.market.csv", market.csv)
        if not csv.is_file():
            raise fail("$.market.csv", f"no such file: {csv}")
        market = msgspec.structs.replace(market, csv=str(csv))
    state_dir = relative("$.state_dir", config.state_dir).resolve()
    api = config.api
    if api.token_file:
        api = msgspec.structs.replace(api, token_file=str(relative("$.api.token_file", api.token_file)))
    return msgspec.structs.replace(config, state_dir=str(state_dir), exchanges=exchanges, instances=instances,
                                   market=market, api=api)
