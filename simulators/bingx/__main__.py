"""``python -m gatebot.simulators.bingx [--auto --speed 300 --csv PATH --wire mixed --rest-port 8080]``:
the simulator alone, printing the URLs and the key/secret to use (``gatebot sim`` calls :func:`main`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from decimal import Decimal

from gatebot.exchanges.paper.exchange import STOP_SLIPPAGE_BPS
from gatebot.exchanges.paper.funding import FundingOptions
from gatebot.simulators.bingx.options import SimOptions, Switches
from gatebot.simulators.bingx.server import BingXSimulator


def parse(argv: list[str] | None) -> SimOptions:
    ap = argparse.ArgumentParser(prog="gatebot sim", description="BingX-compatible exchange simulator on loopback")
    ap.add_argument("--auto", action="store_true",
                    help="play candles continuously (default: only on POST /__sim/fault {op: advance})")
    ap.add_argument("--speed", type=float, default=300.0, help="market time per wall time in auto mode")
    ap.add_argument("--csv", help="candle CSV (timestamp,open,high,low,close,volume); default: generated")
    ap.add_argument("--symbols", default="BTC-USDT", help="comma-separated, e.g. BTC-USDT,ETH-USDT")
    ap.add_argument("--interval", default="5m")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--history-bars", type=int, default=500)
    ap.add_argument("--hedge", action="store_true", help="start the account in hedge mode")
    ap.add_argument("--rest-port", type=int, default=0)
    ap.add_argument("--ws-port", type=int, default=0)
    ap.add_argument("--api-key", default="sim-key")
    ap.add_argument("--secret", default="sim-secret")
    ap.add_argument("--stop-fill-event", choices=["same_id", "derived_id"], default="same_id")
    ap.add_argument("--orphan-stops", choices=["cancel", "keep"], default="keep")
    ap.add_argument("--wire", choices=["numeric", "string", "mixed"], default="mixed",
                    help="JSON types of BingX's eras: numeric ids/times/codes, string ones, or either per reply "
                         "(seeded by --seed)")
    ap.add_argument("--stop-slippage-bps", type=Decimal, default=STOP_SLIPPAGE_BPS,
                    help=f"triggered stops fill this far past the trigger (default {STOP_SLIPPAGE_BPS}; 0 = exact)")
    ap.add_argument("--funding-rate", type=Decimal, default=Decimal(0), help="per funding time (0.0001 = 0.01%%)")
    ap.add_argument("--funding-csv", help="a time,rate CSV of funding rates (instead of a constant)")
    ap.add_argument("--funding-interval-h", type=int, choices=[1, 2, 4, 8], default=8)
    a = ap.parse_args(argv)
    return SimOptions(api_key=a.api_key, secret=a.secret, symbols=a.symbols.split(","), interval=a.interval,
                      source="csv" if a.csv else "generated", csv=a.csv, seed=a.seed, bars=a.bars,
                      history_bars=a.history_bars, mode="auto" if a.auto else "manual", speed=a.speed,
                      hedge_mode=a.hedge, rest_port=a.rest_port, ws_port=a.ws_port, wire=a.wire,
                      stop_slippage_bps=a.stop_slippage_bps,
                      funding=FundingOptions(rate=a.funding_rate, csv=a.funding_csv, interval_h=a.funding_interval_h),
                      switches=Switches(stop_fill_event=a.stop_fill_event, orphan_stops=a.orphan_stops))


async def serve(options: SimOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with BingXSimulator(options) as sim:
        print(f"BingX simulator ({options.mode}, {','.join(options.symbols)} {options.interval}, "
              f"wire {options.wire})", flush=True)
        print(f"  REST      {sim.rest_url}", flush=True)
        print(f"  market ws {sim.ws_url}", flush=True)
        print(f"  user ws   {sim.ws_url}?listenKey=<POST {sim.rest_url}/openApi/user/auth/userDataStream>", flush=True)
        print(f"  api key   {options.api_key}\n  secret    {options.secret}", flush=True)
        print(f"  faults    POST {sim.rest_url}/__sim/fault {{\"op\": ...}}", flush=True)
        print(f"\n{config_snippet(sim.rest_url, sim.ws_url, options)}", flush=True)
        await stop.wait()


KEY_ENV, SECRET_ENV = "GATEBOT_SIM_API_KEY", "GATEBOT_SIM_SECRET"
"""The environment variables the printed snippet names for the simulator's key and secret."""


def config_snippet(rest_url: str, ws_url: str, options: SimOptions) -> str:
    """The account table that points a bot at this simulator, ready to paste (examples/sim.toml is one):
    its URLs, and candles closed by the simulator's pushes rather than the local clock (its market runs at
    ``--speed``)."""
    return (f"# paste into a config, then: export {KEY_ENV}={options.api_key} {SECRET_ENV}={options.secret}\n"
            f"[exchanges.sim]\ntype = \"bingx\"\n[exchanges.sim.options]\n"
            f"rest_url = \"{rest_url}\"\nws_url = \"{ws_url}\"\nclose_candles_by_clock = false\n"
            f"api_key_env = \"{KEY_ENV}\"\nsecret_env = \"{SECRET_ENV}\"")


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
