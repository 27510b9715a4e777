"""The report's PNG chart: equity curve and drawdown per instance (matplotlib: the optional ``plot`` extra).

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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(MISSING) from exc
    from datetime import UTC, datetime

    fig, (ax_eq, ax_dd) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    series = {}
    for r in reports:
        c = r["equity_curve"]
        x = [datetime.fromtimestamp(t / 1000, UTC) for t in c["t"]]
        ax_eq.step(x, c["equity"], where="post", label=r["instance"])
        ax_dd.step(x, [-d for d in c["drawdown_pct"]], where="post")
        series[r["instance"]] = c
    ax_eq.set_ylabel("equity (USDT)")
    ax_eq.legend(loc="best")
    ax_eq.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)
    fig.suptitle("gatebot: equity at trade closes")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=90, metadata={"gatebot-series": json.dumps(series)})
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
