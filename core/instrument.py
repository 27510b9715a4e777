"""Instrument rules and exact money arithmetic: every price and quantity sent to an exchange passes here."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from gatebot.core.events import Side


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """Trading rules of one contract. ``tick`` and ``step`` are powers of ten on BingX, but any
    positive Decimal works."""

    symbol: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal = Decimal(0)
    max_leverage: int = 125

    def floor_qty(self, qty: Decimal) -> Decimal:
        """Quantity rounded down to the step: never more exposure than asked for."""
        return (qty / self.step).to_integral_value(ROUND_FLOOR) * self.step

    def round_price(self, price: Decimal, *, up: bool) -> Decimal:
        mode = ROUND_CEILING if up else ROUND_FLOOR
        return (price / self.tick).to_integral_value(mode) * self.tick

    def stop_price(self, side: Side, fill_price: Decimal, price_sl_pct: Decimal) -> Decimal:
        """The protective stop ``price_sl_pct`` away from the fill, rounded toward the entry so the
        loss can never be wider than configured (LONG stop rounds up, SHORT stop rounds down)."""
        if side == "long":
            return self.round_price(fill_price * (1 - price_sl_pct), up=True)
        return self.round_price(fill_price * (1 + price_sl_pct), up=False)

    def take_profit_price(self, side: Side, fill_price: Decimal, price_tp_pct: Decimal) -> Decimal:
        """The take-profit ``price_tp_pct`` away from the fill on the profit side, rounded away from the entry
        so the profit is never smaller than configured (LONG rounds up, SHORT rounds down)."""
        if side == "long":
            return self.round_price(fill_price * (1 + price_tp_pct), up=True)
        return self.round_price(fill_price * (1 - price_tp_pct), up=False)

    def entry_refusal(self, qty: Decimal, price: Decimal) -> str | None:
        """Why an order of ``qty`` at ``price`` may not be sent, or None when it may."""
        if qty <= 0 or qty < self.min_qty:
            return f"quantity {qty} below the minimum {self.min_qty} of {self.symbol}"
        if qty * price < self.min_notional:
            return f"notional {qty * price:.4f} below the minimum {self.min_notional} of {self.symbol}"
        return None


def to_decimal(x: float) -> Decimal:
    """A float from a feed as the Decimal it was printed as (``repr`` is the shortest round trip)."""
    return Decimal(repr(x))
