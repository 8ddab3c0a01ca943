"""Wire protocol between the trusted parent and the sandboxed agent process.

Frame: 4-byte little-endian unsigned payload length, then the payload; ``payload[0]`` is the
message type. Parent -> child: INIT (JSON run config), BAR (int64 ts_ns + float64 (5, N) block
open/high/low/close/volume), END. Child -> parent: READY (JSON), DECISIONS (float64 mirror
equity + JSON, empty when the agent did nothing and read the same data as on the previous bar),
ERROR (JSON), DONE (JSON).

DECISIONS JSON: ``{"decisions": [{symbol, action, quantity | target_shares | target_percent,
order_type, limit_price, stop_price, trail_amount | trail_percent, expires_at, confidence,
reasoning, inputs, order_ref, parent_ref, oco},
...], "data_read": {key: {"fields": [...], "lookback": n | null}}}``; ``data_read`` is omitted
when unchanged since the previous bar; key ``"*"`` means every symbol of the universe, lookback
null means the whole history so far. A decision may also travel in the compact array form
``[symbol, action, quantity, target_shares, target_percent, order_type, limit_price, confidence,
reasoning, inputs, stop_price, order_ref]`` (``COMPACT_FIELDS``; null = the field is absent),
which means exactly the object with the non-null fields: it saves the keys on the wire and a dict
per decision on both sides (the native host sends this form).

Orders have no ids chosen by the agent: the order decided as the ``seq``-th decision of bar ``t``
is known to both sides as :func:`order_ref` ``(t, seq)`` (``"0000012-003"``, the tail of its FMEL
``decision_id``). A ``CANCEL`` decision names the open order it withdraws by that ref; an order's
``parent_ref`` (bracket child) and ``oco`` (one-cancels-other group) name orders the same way.
Those two, ``trail_amount``/``trail_percent`` and ``expires_at`` (integer ns: a non-market order
still open on a later bar is withdrawn) travel only in the object form.

The parent never unpickles: it parses JSON and checks every field (:func:`check_decision`); a bad
decision is rejected with a reason, it never reaches the accounting. The child runs the same
check on its mirror so that both brokers see the same orders.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import orjson

INIT, BAR, END = 0x01, 0x02, 0x03
READY, DECISIONS, ERROR, DONE = 0x11, 0x12, 0x13, 0x14
NAMES = {
    INIT: "INIT",
    BAR: "BAR",
    END: "END",
    READY: "READY",
    DECISIONS: "DECISIONS",
    ERROR: "ERROR",
    DONE: "DONE",
}

HEADER = struct.Struct("<I")
MAX_FRAME = 64 * 1024 * 1024  # a frame larger than this is a protocol violation, not a message
_TS = struct.Struct("<q")
_EQUITY = struct.Struct("<d")

ACTIONS = ("BUY", "SELL", "HOLD", "TARGET", "CANCEL")
ORDER_TYPES = (
    "market",
    "limit",
    "stop",
    "stop_limit",
    "trailing_stop",
    "trailing_stop_limit",
    "market_on_close",
)
STOP_TYPES = ("stop", "stop_limit", "trailing_stop", "trailing_stop_limit")  # need a stop_price
LIMIT_TYPES = ("limit", "stop_limit", "trailing_stop_limit")  # need a limit_price
TRAIL_TYPES = ("trailing_stop", "trailing_stop_limit")  # need a trail_amount or a trail_percent
# What the agent's process reports with DONE ("timing_s": seconds per part of its loop): waiting
# for the next bar, taking it (history, mirror broker), the agent's own code, the checks of its
# answer for the mirror, encoding it, sending it, and what it does after sending, while the parent
# handles the answer (the mirror takes the orders; the history's next pages are mapped). Reported
# by the sandboxed side, so diagnostics only: nothing that is accounted or ranked reads it.
AGENT_TIMING = ("waiting", "taking_bar", "agent_code", "checks", "encoding", "sending", "after_sending")
MAX_REASONING = 4000
MAX_INPUTS = 64
MAX_TARGET_PERCENT = 10.0
# Shares in one order or target. Far beyond any real order (the largest companies have ~1e10
# shares); it keeps cash, positions and equity finite whatever an agent sends (1e308 shares sold
# short would make them infinite, then NaN).
MAX_SHARES = 1e12


class ProtocolError(RuntimeError):
    """A peer sent something that is not a valid message of this protocol."""


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json's C encoder, built once (json.dumps rebuilds it per call, which dominates for small bodies).
_C_ENCODER = c_make_encoder(None, _unencodable, encode_basestring_ascii, None, ":", ",", False, False, True)


_C_SORTED = c_make_encoder(None, _unencodable, encode_basestring_ascii, None, ":", ",", True, False, True)


def dumps(obj: Any) -> str:
    """Compact JSON text (NaN allowed: the receiving side's field checks reject it)."""
    return "".join(_C_ENCODER(obj, 0))


def dumps_sorted(obj: Any) -> str:
    """Compact JSON text with sorted keys (stable text for logged mappings)."""
    return "".join(_C_SORTED(obj, 0))


_orjson_dumps = orjson.dumps
# Where orjson spells a float as ``repr`` does (see float_text): from ORJSON_AS_REPR_LOW up to,
# not including, ORJSON_AS_REPR_HIGH in magnitude (and 0.0, which both spell "0.0").
ORJSON_AS_REPR_LOW, ORJSON_AS_REPR_HIGH = 1e-4, 1e16


def float_text(value: float) -> str:
    """``repr(value)`` of a finite float, four times faster in the usual range.

    Why: turning floats into text (prices, P&L, the agent's inputs) was about a seventh of the
    trusted parent's work on a long run; ``repr`` runs a big-number algorithm for every value.
    orjson's Ryu gives the same shortest digits, spelled the same as ``repr`` between 1e-4 and
    1e16 (checked on about 500,000 random values in the tests). Below 1e-4 orjson writes no
    exponent where ``repr`` does, so ``repr`` is used outside that range.
    """
    if ORJSON_AS_REPR_LOW <= abs(value) < ORJSON_AS_REPR_HIGH:
        return _orjson_dumps(value).decode()
    return repr(value)


def number_text(value: float | int) -> str:
    """JSON text of a finite float or an int (the caller checked which), as ``repr`` spells it."""
    return float_text(value) if type(value) is float else repr(value)


def encode_json(kind: int, obj: Any) -> bytes:
    return bytes((kind,)) + dumps(obj).encode()


def _nan_constant(_: str) -> float:
    return math.nan  # NaN/Infinity parse to NaN, which the field checks then reject


# Built once: ``json.loads(..., parse_constant=...)`` builds a decoder per call (a cost per bar).
_DECODER = json.JSONDecoder(parse_constant=_nan_constant)
_detect_encoding = json.detect_encoding


# Every digit as "9": a body holding 19 "9"s in a row after this holds a 19-digit run.
_DIGITS_AS_NINE = bytes.maketrans(b"012345678", b"999999999")
_LONG_DIGITS = b"9" * 19
# A 19-digit run that does not follow a decimal point: an integer part (or digits in a text).
# A fraction's digits are not: a float below 0.01 spelt with 17 significant digits has 19 digits
# after its point (0.0033355853740733907), and 14 % of the benchmark agent's answers hold one.
_LONG_INTEGER = re.compile(rb"(?<![.0-9])[0-9]{19}")
_orjson_loads = orjson.loads
_OrjsonDecodeError = orjson.JSONDecodeError


def decode_json(payload: bytes | memoryview, offset: int = 1) -> Any:
    """The JSON body of a message, decoded as the ``json`` module decodes it (NaN included).

    Why two decoders: orjson decodes a DECISIONS body four times faster, and gives the same
    values for every text it accepts, except integers beyond 64 bits, which it turns into floats.
    A body with a run of 19 digits that is not a fraction's, or one orjson refuses (NaN, numbers
    beyond a double, a byte order mark, a lone surrogate, nesting past 1,024 levels), goes
    through ``json``, which decides. Floats read the same in both (correctly rounded), however
    many digits their fraction has.
    """
    body = bytes(payload[offset:])
    if not body:
        return {}
    if _LONG_DIGITS not in body.translate(_DIGITS_AS_NINE) or not _LONG_INTEGER.search(body):
        try:
            return _orjson_loads(body)
        except _OrjsonDecodeError:
            pass  # the json module decides, and words the error
    kind = NAMES.get(payload[0], payload[0])
    try:  # exactly what json.loads does with bytes, minus the per-call decoder
        return _DECODER.decode(body.decode(_detect_encoding(body), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid JSON in {kind} message: {exc}") from None
    except RecursionError:  # the decoder recurses per level: a forged body can nest past the stack
        raise ProtocolError(f"JSON in {kind} message nested too deeply") from None


def encode_bar(ts_ns: int, block: np.ndarray) -> bytes:
    """BAR message: ``block`` is (5, N) float64 open/high/low/close/volume."""
    return bytes((BAR,)) + _TS.pack(ts_ns) + np.ascontiguousarray(block, dtype=np.float64).tobytes()


def decode_bar(payload: bytes | memoryview, n_symbols: int) -> tuple[int, np.ndarray]:
    if len(payload) != 9 + 40 * n_symbols:
        raise ProtocolError(f"BAR of {len(payload)} bytes for {n_symbols} symbols")
    (ts_ns,) = _TS.unpack_from(payload, 1)
    return ts_ns, np.frombuffer(payload, dtype=np.float64, offset=9).reshape(5, n_symbols)


def encode_decisions(mirror_equity: float, body: dict[str, Any] | None, plain: bool = False) -> bytes:
    """DECISIONS message. ``plain``: the caller knows that every value the body's decisions are
    judged by is a finite number, a string, a bool or null (see :func:`check_plain`); orjson then
    writes it, ten times faster than ``json``. orjson writes NaN as null, which is why it needs
    that promise (a NaN confidence must reach the parent as NaN, to be rejected as one); what it
    cannot write (a number beyond 64 bits, a lone surrogate) goes through ``json``.
    """
    head = bytes((DECISIONS,)) + _EQUITY.pack(mirror_equity)
    if not body:
        return head
    if plain:
        try:
            return head + _orjson_dumps(body)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return head + dumps(body).encode()


def decode_decisions_raw(payload: bytes | memoryview) -> tuple[float, dict[str, Any]]:
    """(mirror equity, body) with decisions as sent (objects or compact arrays): the runner's path."""
    if len(payload) < 9:
        raise ProtocolError("DECISIONS message too short")
    (equity,) = _EQUITY.unpack_from(payload, 1)
    body = decode_json(payload, 9) if len(payload) > 9 else {}
    if not isinstance(body, dict):
        raise ProtocolError("DECISIONS body must be a JSON object")
    return equity, body


def decode_decisions(payload: bytes | memoryview) -> tuple[float, dict[str, Any]]:
    """(mirror equity, body) with every compact decision expanded to its object form."""
    equity, body = decode_decisions_raw(payload)
    decisions = body.get("decisions")
    if isinstance(decisions, list):
        body["decisions"] = [expand(d) for d in decisions]
    return equity, body


COMPACT_FIELDS = (
    "symbol",
    "action",
    "quantity",
    "target_shares",
    "target_percent",
    "order_type",
    "limit_price",
    "confidence",
    "reasoning",
    "inputs",
    "stop_price",
    "order_ref",
)
_N_COMPACT = len(COMPACT_FIELDS)


def expand(raw: Any) -> Any:
    """The object form of a compact decision (anything else is returned unchanged)."""
    if type(raw) is list and len(raw) == _N_COMPACT:
        return {k: v for k, v in zip(COMPACT_FIELDS, raw, strict=True) if v is not None}
    return raw


@dataclass(slots=True)
class CheckedDecision:
    """A decision after field checks. ``reject_reason`` set means it never becomes an order."""

    symbol: str | None
    action: str
    quantity: float | None = None
    target_shares: float | None = None
    target_percent: float | None = None
    order_type: str = "market"
    limit_price: float | None = None
    confidence: float | None = None
    reasoning: str = ""
    inputs: dict[str, Any] | None = None
    reject_reason: str | None = None
    stop_price: float | None = None
    order_ref: str | None = None  # CANCEL: the open order it withdraws
    parent_ref: str | None = None  # bracket child: waits for this order to fill
    oco: str | None = None  # one-cancels-other: joins the group of this open order
    trail_amount: float | None = None  # trailing stop: distance from the close (price units)
    trail_percent: float | None = None  # ... or as a fraction of the close
    expires_at: int | None = None  # ns since the epoch: withdrawn on the first bar after it

    @property
    def is_order(self) -> bool:
        return self.reject_reason is None and self.action != "HOLD" and self.action != "CANCEL"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ns(moment: datetime) -> int:
    """``moment`` as integer ns since the epoch, the wire's unit for times (a naive one is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def order_ref(bar: int, seq: int) -> str:
    """The ref of the order decided as the ``seq``-th decision of bar ``bar`` (see the module doc)."""
    return f"{bar:07d}-{seq:03d}"


def parse_order_ref(ref: str) -> tuple[int, int] | None:
    """(bar, seq) of a well-formed :func:`order_ref`, else None."""
    bar, sep, seq = ref.partition("-")
    if not sep or len(bar) != 7 or len(seq) != 3 or not (bar.isdigit() and seq.isdigit()):
        return None
    return int(bar), int(seq)


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else None  # NaN/inf -> None
    if kind is bool or not isinstance(value, int | float):  # bool, str, list ... are not numbers here
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _clean_inputs(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        return None, "inputs must be a mapping of name -> value"
    if len(raw) > MAX_INPUTS:
        return None, f"too many inputs ({len(raw)} > {MAX_INPUTS})"
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = type(value)
        if type(key) is not str:
            return None, "input names must be strings"
        if kind is float:
            out[key] = value if value - value == 0.0 else None  # NaN/inf -> null
        elif kind is int or kind is bool or value is None:
            out[key] = value
        elif kind is str:
            out[key] = value[:200]
        elif isinstance(value, float):  # float subclasses (numpy.float64) serialize as floats
            out[key] = float(value) if math.isfinite(value) else None
        else:
            return None, f"input {key!r} must be a number, string, bool or null"
    return out, None


def _rejected(
    sym: str | None, act: str, reasoning: Any, inputs: dict[str, Any] | None, reason: str
) -> CheckedDecision:
    text = reasoning[:MAX_REASONING] if isinstance(reasoning, str) else ""
    return CheckedDecision(symbol=sym, action=act, reasoning=text, inputs=inputs, reject_reason=reason)


def _fast_inputs(raw: Any) -> bool:
    """True when ``raw`` is None or a mapping that :func:`_clean_inputs` would return unchanged."""
    if raw is None:
        return True
    if type(raw) is not dict or len(raw) > MAX_INPUTS:
        return False
    for key, value in raw.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # NaN/inf are cleaned to null: the general path does it
                return False
        elif kind is str:
            if len(value) > 200:
                return False
        elif not (kind is int or kind is bool or value is None):
            return False
    return True


def _fast_check(raw: list[Any], symbols: Mapping[str, int]) -> CheckedDecision | None:
    """The common well-formed compact decision, checked without building its object form.

    Returns None whenever anything is unusual; :func:`check_decision` then runs the general checks
    on the object form, so both paths give the same answer for every input.
    """
    sym, act, qty, shares, pct, order_type, limit, confidence, reasoning, inputs, stop, ref = raw
    if type(sym) is not str or sym not in symbols or type(act) is not str:
        return None
    if reasoning is None:
        reasoning = ""
    elif type(reasoning) is not str or len(reasoning) > MAX_REASONING:
        return None
    if confidence is not None and not (type(confidence) is float and 0.0 <= confidence <= 1.0):
        return None
    if not _fast_inputs(inputs):
        return None
    if ref is not None:  # a CANCEL: the general path reads nothing else of it
        if act == "CANCEL" and type(ref) is str and parse_order_ref(ref) is not None:
            return CheckedDecision(
                sym, act, None, None, None, "market", None, confidence, reasoning, inputs, order_ref=ref
            )
        return None
    if limit is not None:
        return None  # limit and stop-limit orders take the general path
    if stop is not None:  # a plain stop order (trailing ones travel in the object form)
        if (
            order_type == "stop"
            and (act == "BUY" or act == "SELL")
            and type(stop) is float
            and stop > 0.0
            and stop - stop == 0.0
            and type(qty) is float
            and 0.0 < qty <= MAX_SHARES
        ):
            return CheckedDecision(
                sym, act, qty, None, None, "stop", None, confidence, reasoning, inputs, stop_price=stop
            )
        return None
    if order_type is not None and order_type != "market":
        return None
    if act == "TARGET":
        if qty is not None:
            return None  # the general path ignores it; keep one place that decides
        if shares is None and type(pct) is float and -MAX_TARGET_PERCENT <= pct <= MAX_TARGET_PERCENT:
            return CheckedDecision(sym, act, None, None, pct, "market", None, confidence, reasoning, inputs)
        if pct is None and type(shares) is float and -MAX_SHARES <= shares <= MAX_SHARES:
            return CheckedDecision(
                sym, act, None, shares, None, "market", None, confidence, reasoning, inputs
            )
        return None
    if act == "BUY" or act == "SELL":
        if type(qty) is float and 0.0 < qty <= MAX_SHARES:
            return CheckedDecision(sym, act, qty, None, None, "market", None, confidence, reasoning, inputs)
        return None
    if act == "HOLD" and qty is None and shares is None and pct is None:
        return CheckedDecision(sym, act, None, None, None, "market", None, confidence, reasoning, inputs)
    return None


def check_plain(raw: Any, symbols: Mapping[str, int]) -> tuple[CheckedDecision, bool]:
    """:func:`check_decision`, and whether the decision passed the fast checks: then the fields its
    outcome depends on are finite numbers, strings, bools or null, and a body of such decisions
    may be written by orjson (:func:`encode_decisions`): the parent decodes the same values."""
    if type(raw) is list and len(raw) == _N_COMPACT:
        checked = _fast_check(raw, symbols)
        if checked is not None:
            return checked, True
    return check_decision(raw, symbols), False


def check_decision(raw: Any, symbols: Mapping[str, int]) -> CheckedDecision:
    """Validate one wire decision; never raises on bad content, returns a rejected decision instead.

    ``raw`` is a decision object or its compact array form (see the module docstring).
    """
    if type(raw) is list and len(raw) == _N_COMPACT:
        checked = _fast_check(raw, symbols)
        if checked is not None:
            return checked
        raw = expand(raw)
    if not isinstance(raw, dict):
        return CheckedDecision(symbol=None, action="INVALID", reject_reason="decision must be a JSON object")
    get = raw.get
    symbol, action, reasoning = get("symbol"), get("action"), get("reasoning", "")
    sym = symbol if isinstance(symbol, str) else None
    act = action.upper() if isinstance(action, str) else "INVALID"
    inputs, inputs_error = _clean_inputs(get("inputs"))
    if sym is None or sym not in symbols:
        return _rejected(sym, act, reasoning, inputs, f"unknown symbol {symbol!r}")
    if act not in ACTIONS:
        return _rejected(
            sym, act, reasoning, inputs, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
        )
    if not isinstance(reasoning, str):
        return _rejected(sym, act, reasoning, inputs, "reasoning must be text")
    if inputs_error:
        return _rejected(sym, act, reasoning, inputs, inputs_error)
    confidence = get("confidence")
    if confidence is not None:
        confidence = _number(confidence)
        if confidence is None or not 0.0 <= confidence <= 1.0:
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"confidence must be a number in [0, 1], got {get('confidence')!r}",
            )
    if act == "CANCEL":
        ref = get("order_ref")
        if not isinstance(ref, str) or parse_order_ref(ref) is None:
            return _rejected(
                sym, act, reasoning, inputs, f"CANCEL needs the order_ref of an open order, got {ref!r}"
            )
        return CheckedDecision(
            sym,
            act,
            None,
            None,
            None,
            "market",
            None,
            confidence,
            reasoning[:MAX_REASONING],
            inputs,
            order_ref=ref,
        )
    order_type = get("order_type", "market")
    limit_price = stop_price = trail_amount = trail_percent = None
    if order_type not in ORDER_TYPES:
        return _rejected(
            sym,
            act,
            reasoning,
            inputs,
            f"order_type must be one of {', '.join(repr(t) for t in ORDER_TYPES)}, got {order_type!r}",
        )
    if order_type in STOP_TYPES:
        if act != "BUY" and act != "SELL" and act != "HOLD":
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"{order_type} orders are BUY or SELL with a quantity (not TARGET)",
            )
        raw_stop = get("stop_price")
        stop_price = _number(raw_stop)
        if (stop_price is None or stop_price <= 0) and not (
            order_type == "trailing_stop" and raw_stop is None
        ):
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"{order_type} order needs a positive stop_price, got {raw_stop!r}",
            )
    if order_type in LIMIT_TYPES:
        limit_price = _number(get("limit_price"))
        if limit_price is None or limit_price <= 0:
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"{order_type} order needs a positive limit_price, got {get('limit_price')!r}",
            )
    if order_type in TRAIL_TYPES:
        trail_amount, trail_percent = _number(get("trail_amount")), _number(get("trail_percent"))
        amount_ok = trail_amount is not None and trail_amount > 0
        percent_ok = trail_percent is not None and 0 < trail_percent < 1
        if (trail_amount is None) == (trail_percent is None) or not (amount_ok or percent_ok):
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"{order_type} needs exactly one of trail_amount (> 0) or trail_percent (in (0, 1)), "
                f"got {get('trail_amount')!r} / {get('trail_percent')!r}",
            )
    quantity = target_shares = target_percent = None
    if act == "BUY" or act == "SELL":
        quantity = _number(get("quantity"))
        if quantity is None or not 0 < quantity <= MAX_SHARES:
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"{act} needs a positive quantity of at most {MAX_SHARES:g} shares, got {get('quantity')!r}",
            )
    elif act == "TARGET":
        raw_shares, raw_pct = get("target_shares"), get("target_percent")
        if (raw_shares is None) == (raw_pct is None):
            return _rejected(
                sym, act, reasoning, inputs, "TARGET needs exactly one of target_shares or target_percent"
            )
        if raw_shares is not None:
            target_shares = _number(raw_shares)
            if target_shares is None or abs(target_shares) > MAX_SHARES:
                return _rejected(
                    sym,
                    act,
                    reasoning,
                    inputs,
                    f"target_shares must be a number within ±{MAX_SHARES:g}, got {raw_shares!r}",
                )
        else:
            target_percent = _number(raw_pct)
            if target_percent is None or abs(target_percent) > MAX_TARGET_PERCENT:
                return _rejected(
                    sym,
                    act,
                    reasoning,
                    inputs,
                    f"target_percent must be a finite fraction of equity within "
                    f"±{MAX_TARGET_PERCENT:g}, got {raw_pct!r}",
                )
    else:  # HOLD carries no order
        order_type, limit_price, stop_price = "market", None, None
        trail_amount = trail_percent = None
    links: dict[str, Any] = {}
    if act != "HOLD" and "expires_at" in raw:
        expires = get("expires_at")
        if type(expires) is not int or not -(2**63) <= expires < 2**63:
            return _rejected(
                sym,
                act,
                reasoning,
                inputs,
                f"expires_at must be integer nanoseconds since the epoch, got {expires!r}",
            )
        links["expires_at"] = expires
    if act != "HOLD":
        for name in ("parent_ref", "oco"):
            ref = get(name)
            if ref is None:
                continue
            if not isinstance(ref, str) or parse_order_ref(ref) is None:
                return _rejected(
                    sym,
                    act,
                    reasoning,
                    inputs,
                    f"{name} must be the ref of an order (like '0000012-003'), got {ref!r}",
                )
            links[name] = ref
    return CheckedDecision(
        sym,
        act,
        quantity,
        target_shares,
        target_percent,
        order_type,
        limit_price,
        confidence,
        reasoning[:MAX_REASONING],
        inputs,
        stop_price=stop_price,
        trail_amount=trail_amount,
        trail_percent=trail_percent,
        **links,
    )


def recv_init(channel: Any) -> dict[str, Any]:
    """The run configuration every host reads first (its first frame must be INIT)."""
    payload = channel.recv()
    if payload[0] != INIT:
        raise ProtocolError(f"expected INIT, got {NAMES.get(payload[0], payload[0])}")
    return decode_json(payload)
