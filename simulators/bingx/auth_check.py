"""Server-side request authentication (protocol page §2.4), with BingX's error codes.

Order of checks as BingX reports them: API key (100413), signature present (100412), timestamp inside
the window (100421), signature valid (100001). listenKey calls need only the key header.
"""

from __future__ import annotations

import time

from gatebot.exchanges.bingx.auth import verify
from gatebot.simulators.bingx.options import SimOptions


class ApiError(Exception):
    """A business or gateway error: an HTTP 200 envelope with ``code`` (or ``status`` when not 200)."""

    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


def check(options: SimOptions, *, api_key: str | None, params: dict[str, str], query: str, body: str,
          key_only: bool = False, now_ms: int | None = None) -> None:
    """Raise :class:`ApiError` unless the request is authentic. ``query``/``body`` are as received
    (percent-encoded): the signature is recomputed over them in received order, values decoded."""
    if not api_key or api_key != options.api_key:
        raise ApiError(100413, "Incorrect apiKey")
    if key_only and "signature" not in params:
        return
    if "signature" not in params or not params["signature"]:
        raise ApiError(100412, "Null signature")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        ts = int(params.get("timestamp", ""))
        window = int(params.get("recvWindow") or options.recv_window_ms)
    except ValueError:
        raise ApiError(100421, "Null timestamp or timestamp mismatch") from None
    if now - ts > window or ts - now > options.switches.future_timestamp_ms:
        raise ApiError(100421, f"Null timestamp or timestamp mismatch, server time {now}, request {ts}")
    if not verify(options.secret, query, body, lenient=options.switches.lenient_signature):
        raise ApiError(100001, "Signature verification failed due to signature mismatch")
