"""The report's PNG chart: price with trades and stops, equity marked to market and drawdown per instance
(matplotlib: the optional ``plot`` extra).

The plotted series are also written into the PNG itself (a ``gatebot-series`` text chunk, JSON), so
what was drawn can be read back and checked against the journal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


MISSING = "the PNG chart needs matplotlib: pip install 'gatebot[plot]' (the text and JSON report were written)"


def plot_report(reports: list[dict[str, Any]], out: Path) -> None:
    """Per instance: the price (candle closes when known, else the trades' prices) with entries, exits and
    stops; the equity marked to market with the training window shaded; the drawdown."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(MISSING) from exc
    from datetime import UTC, datetime

    def when(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    n = max(1, len(reports))
    fig, axes = plt.subplots(3 * n, 1, figsize=(11, 7.5 * n), sharex=True, height_ratios=(3, 3, 1) * n,
                             squeeze=False)
    series = {}
    for k, r in enumerate(reports):
        ax_px, ax_eq, ax_dd = axes[3 * k][0], axes[3 * k + 1][0], axes[3 * k + 2][0]
        ev = r["evaluation"]
        c = ev["equity_curve"]
        x = [when(t) for t in c["t"]]
        price = r.get("price") or {}
        if price.get("t"):
            ax_px.plot([when(t) for t in price["t"]], price["close"], lw=0.6, color="0.4", label="close")
        rows = ev["trades_table"]
        for side, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:red")):
            sel = [t for t in rows if t["side"] == side]
            ax_px.scatter([when(t["filled_at"]) for t in sel], [float(t["entry_price"]) for t in sel], marker=marker,
                          s=22, color=color, label=f"{side} entry", zorder=3)
        done = [t for t in rows if t["exit"] != "open"]
        ax_px.scatter([when(t["closed_at"]) for t in done], [float(t["exit_price"]) for t in done], marker="x", s=18,
                      color="black", label="exit", zorder=3)
        stopped = [t for t in rows if t["stop_price"] is not None]
        ax_px.hlines([float(t["stop_price"]) for t in stopped], [when(t["filled_at"]) for t in stopped],
                     [when(t["closed_at"]) for t in stopped], colors="tab:orange", lw=1.2, label="stop")
        ax_px.set_ylabel("price")
        ax_px.set_title(f"{r['instance']}: price, trades and stops")
        ax_px.legend(loc="best", fontsize=7)
        ax_eq.plot(x, c["equity"], lw=0.9, label=f"equity (marked at {ev['marks']})")
        ax_dd.fill_between(x, [-d for d in c["drawdown_pct"]], 0, step="post", color="tab:red", alpha=0.4)
        if ev["training"] is not None:
            for ax in (ax_px, ax_eq, ax_dd):
                ax.axvspan(when(ev["training"]["start_ms"]), when(ev["training"]["end_ms"]), color="0.85",
                           zorder=0, label="training window (in sample)" if ax is ax_eq else None)
        ax_eq.set_ylabel("equity (USDT)")
        ax_eq.legend(loc="best", fontsize=7)
        ax_dd.set_ylabel("drawdown %")
        for ax in (ax_px, ax_eq, ax_dd):
            ax.grid(alpha=0.3)
        series[r["instance"]] = c
    trained = any(r["evaluation"]["training"] is not None for r in reports)
    fig.suptitle("gatebot: the shaded span is the training window (in sample); the rest is out of sample" if trained
                 else "gatebot: no training window declared (all out of sample)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, format="png", dpi=80, metadata={"gatebot-series": json.dumps(series)})
    plt.close(fig)


def read_series(png: Path) -> dict[str, Any]:
    """The series a chart was drawn from (its ``gatebot-series`` text chunk)."""
    import struct
    import zlib

    data = png.read_bytes()
    p = 8
    while p + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[p:p + 8])
        body = data[p + 8:p + 8 + n]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, _, rest = body.partition(b"\0")
            if key == b"gatebot-series":
                if kind == b"zTXt":
                    rest = zlib.decompress(rest[1:])
                elif kind == b"iTXt":
                    flag, rest = rest[0], rest[2:]
                    rest = rest.split(b"\0", 2)[2]
                    rest = zlib.decompress(rest) if flag else rest
                return json.loads(rest.decode("latin-1" if kind == b"tEXt" else "utf-8"))
        p += 12 + n
    raise ValueError(f"{png}: no gatebot-series chunk")
