"""Which execution event means which trigger: the routing table (docs/architecture.md renders it).

An execution event of one of this instance's orders (accepted, rejected, filled, canceled, expired) is
looked up by the event itself, the order's role in the position (its client id's role letter, or none for
an order of an earlier position) and conditions on the position record; the first row that matches says
what the engine does: fire a trigger of the state machine, only journal the order's new status, book a
stray fill, ask the exchange once more (``reconcile``), or ignore it. Two rows need a fact only the
exchange has (the fills of an entry reported fuller than booked, whether a position is left when a close
is refused): they answer ``fetch fills`` / ``ask position``, the engine gets the fact and routes the same
event again with it (:class:`Facts`). Pure: no I/O, no engine; the engine executes the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gatebot.core.events import (
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from gatebot.core.position import EXITED, PositionRecord

ExecutionEvent = OrderAccepted | OrderRejected | OrderFilled | OrderCanceled | OrderExpired

STATUS, STRAY, IGNORE, RECONCILE = "status", "stray", "ignore", "reconcile"
FETCH_FILLS, ASK_POSITION = "fetch fills", "ask position"
"""Answers that are not triggers: journal the status row only, book a stray fill (then reconcile), do
nothing, ask recovery to look again, get a fact from the exchange and route again."""
ACTIONS = (STATUS, STRAY, IGNORE, RECONCILE, FETCH_FILLS, ASK_POSITION)

ANY_ROLE, NO_ROLE = "*", "-"
"""Order roles of a row: any, or an order of an earlier position of this journal (no role now)."""
_ROLE_NAMES = {"e": "entry", "s": "stop", "x": "close", "t": "take-profit", ANY_ROLE: "any",
               NO_ROLE: "earlier position's"}


class Facts(NamedTuple):
    """What a row may look at beyond the event: the position now, and what the engine learned."""

    client_id: str
    rec: PositionRecord
    state: str
    booked: bool = False
    """A fill already in the journal (a duplicated event)."""
    reported_qty: Any = 0
    """The quantity the exchange says the order filled in all (canceled / expired events)."""
    fetched: bool = False
    """This order's fills were just asked for and booked (``fetch fills``)."""
    position_gone: bool | None = None
    """None until asked (``ask position``): True when the exchange holds nothing on the position's side."""


_CONDITIONS: dict[str, Callable[[Facts], bool]] = {
    "booked": lambda f: f.booked,
    "exited": lambda f: f.state in EXITED,
    "entering": lambda f: f.state == "entering",
    "exiting": lambda f: f.state == "exiting",
    "working": lambda f: f.client_id in f.rec.working,
    "canceling": lambda f: f.client_id in f.rec.canceling,
    "pending_stop": lambda f: f.client_id == f.rec.pending_stop_id,
    "its_stop": lambda f: f.client_id in (f.rec.stop_id, f.rec.pending_stop_id),
    "its_close": lambda f: f.client_id == f.rec.close_id,
    "its_tp": lambda f: f.client_id == f.rec.tp_id,
    "pending_tp": lambda f: f.client_id == f.rec.tp_id and not f.rec.tp_live,
    "has_fills": lambda f: f.rec.filled_qty > 0,
    "fuller": lambda f: f.reported_qty > f.rec.filled_qty,
    "fetched": lambda f: f.fetched,
    "short": lambda f: f.rec.filled_qty < f.reported_qty,
    "gone": lambda f: f.position_gone is True,
    "held": lambda f: f.position_gone is False,
}
"""The named conditions of the rows (``not <name>`` negates one). ``fuller``: the exchange reports more
filled than the journal booked; ``short``: still so after this order's fills were booked."""


class Rule(NamedTuple):
    events: tuple[type, ...]
    role: str
    when: tuple[str, ...]
    then: str
    why: str = ""


_FILL = (OrderFilled,)
_ACK = (OrderAccepted,)
_REJ = (OrderRejected,)
_GONE = (OrderCanceled, OrderExpired)
_NOT_FILL = (OrderAccepted, OrderRejected, OrderCanceled, OrderExpired)

TABLE: tuple[Rule, ...] = (
    Rule(_FILL, ANY_ROLE, ("booked",), IGNORE, "a duplicated event: booked once already"),
    Rule(_FILL, "e", (), "entry_filled"),
    Rule(_FILL, "s", (), "stop_filled"),
    Rule(_FILL, "x", (), "close_filled"),
    Rule(_FILL, "t", (), "tp_filled"),
    Rule(_FILL, ANY_ROLE, (), STRAY, "a fill of an earlier position's order: booked, then reconciled"),
    Rule(_NOT_FILL, NO_ROLE, (), IGNORE, "an earlier position's order: its end changes nothing now"),
    Rule(_ACK, ANY_ROLE, ("pending_stop",), "stop_confirmed"),
    Rule(_ACK, "t", ("pending_tp", "not exited"), "tp_confirmed"),
    Rule(_ACK, ANY_ROLE, (), STATUS),
    Rule(_REJ, "x", ("held",), "close_rejected", "the refused close asked about: the position is still there"),
    Rule(_REJ, "x", ("gone", "exiting"), "position_gone",
         "nothing left to close (closed by the stop, its push lost, or by hand): its missed fills booked first; "
         "asking again would be refused forever"),
    Rule(_REJ, "x", ("gone",), STATUS, "the missed fills booked ended the position"),
    Rule(_REJ, ANY_ROLE, ("exited", "working"), "order_gone"),
    Rule(_REJ, ANY_ROLE, ("exited",), STATUS),
    Rule(_REJ, "e", ("entering",), "entry_rejected"),
    Rule(_REJ, "s", ("its_stop",), "stop_rejected"),
    Rule(_REJ, "t", ("its_tp",), "tp_rejected"),
    Rule(_REJ, "x", ("its_close", "exiting"), ASK_POSITION, "a close refused: is anything left to close?"),
    Rule(_REJ, ANY_ROLE, ("working",), "order_gone"),
    Rule(_REJ, ANY_ROLE, (), STATUS),
    Rule(_GONE, "e", ("fetched", "short"), RECONCILE, "the exchange does not show the fills yet: recovery asks again"),
    Rule(_GONE, "e", ("fetched", "not entering"), STATUS, "the fills booked completed the entry"),
    Rule(_GONE, "e", ("fetched", "not working"), STATUS, "the fills booked completed the entry"),
    Rule(_GONE, "e", ("fetched",), "entry_completed"),
    Rule(_GONE, ANY_ROLE, ("canceling", "working"), "order_gone"),
    Rule(_GONE, ANY_ROLE, ("canceling",), IGNORE),
    Rule(_GONE, ANY_ROLE, ("exited", "working"), "order_gone"),
    Rule(_GONE, ANY_ROLE, ("exited",), IGNORE),
    Rule(_GONE, "e", ("entering", "working", "fuller"), FETCH_FILLS,
         "the exchange filled more than booked, the fills' pushes come later: taking the entry for unfilled "
         "would leave its position to the foreign policy"),
    Rule(_GONE, "e", ("entering", "working", "has_fills"), "entry_completed"),
    Rule(_GONE, "e", ("entering", "working"), "entry_rejected"),
    Rule(_GONE, "s", ("its_stop",), "stop_canceled"),
    Rule(_GONE, "t", ("its_tp",), "tp_canceled"),
    Rule(_GONE, "x", ("its_close", "exiting"), "close_rejected"),
    Rule(_GONE, ANY_ROLE, ("working",), "order_gone"),
    Rule(_GONE, ANY_ROLE, (), IGNORE),
)


class Route(NamedTuple):
    """What the engine does with the event: ``action`` is a trigger or one of :data:`ACTIONS`; ``data`` the
    keyword arguments of ``Engine.fire`` for a trigger, ``status`` the status row (client id, status, detail)."""

    action: str
    data: dict[str, Any]
    status: tuple[str, str, str] | None
    rule: int


def _holds(cond: str, facts: Facts) -> bool:
    if cond.startswith("not "):
        return not _CONDITIONS[cond[4:]](facts)
    return _CONDITIONS[cond](facts)


def _matches(rule: Rule, event: ExecutionEvent, role: str | None, facts: Facts) -> bool:
    if type(event) not in rule.events:
        return False
    if rule.role == NO_ROLE:
        if role is not None:
            return False
    elif rule.role != ANY_ROLE and role != rule.role:
        return False
    return all(_holds(c, facts) for c in rule.when)


def _status_of(event: ExecutionEvent) -> tuple[str, str, str] | None:
    if isinstance(event, OrderAccepted):
        return (event.client_id, "acked", "")
    if isinstance(event, OrderRejected):
        return (event.client_id, "failed", f"{event.code} {event.reason}".strip())
    if isinstance(event, OrderCanceled | OrderExpired):
        return (event.client_id, "gone", event.reason)
    return None


def _fire_data(trigger: str, event: ExecutionEvent, status: tuple[str, str, str] | None,
               bar: int) -> dict[str, Any]:
    """The arguments each trigger is fired with."""
    cid = event.client_id
    if isinstance(event, OrderFilled):
        return {"fill": event, "detail": {"fill": cid, "qty": str(event.qty), "price": str(event.price)}}
    if trigger == "stop_confirmed":
        return {"client_id": cid, "bar": bar, "status": status}
    if trigger in ("order_gone", "stop_canceled", "tp_confirmed"):
        return {"client_id": cid, "status": status}
    if trigger == "entry_completed":
        return {"status": status}
    detail = status[2] if isinstance(event, OrderRejected) and status else (getattr(event, "reason", "") or "canceled")
    if trigger in ("tp_canceled", "tp_rejected"):
        return {"client_id": cid, "status": status, "reason": f"take-profit {detail}"}
    if trigger == "position_gone":
        return {"status": status, "reason": f"close refused ({detail}); no position on the exchange"}
    return {"reason": detail, "status": status}  # entry_rejected, stop_rejected, close_rejected


def route(event: ExecutionEvent, role: str | None, facts: Facts, *, bar: int = 0) -> Route:
    """The first row of :data:`TABLE` that matches ``event`` of an order of ``role`` (a role letter, or None
    for an earlier position's order) with ``facts``; ``bar`` goes into a confirmed stop."""
    for i, rule in enumerate(TABLE):
        if _matches(rule, event, role, facts):
            status = _status_of(event)
            data = {} if rule.then in ACTIONS else _fire_data(rule.then, event, status, bar)
            return Route(rule.then, data, status, i)
    raise AssertionError(f"no routing row for {type(event).__name__} of role {role!r}")  # the last rows match all


def table_markdown() -> str:
    """The routing table as docs/architecture.md shows it (a test keeps the two identical)."""
    lines = ["| event | order | when | then | why |", "|---|---|---|---|---|"]
    for r in TABLE:
        events = ", ".join(e.__name__ for e in r.events)
        then = r.then if r.then in ACTIONS else f"`{r.then}`"
        lines.append(f"| {events} | {_ROLE_NAMES[r.role]} | {' and '.join(r.when)} | {then} | {r.why} |")
    return "\n".join(lines)
