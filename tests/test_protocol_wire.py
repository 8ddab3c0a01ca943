"""The DECISIONS wire's two JSON writers and two readers give the parent what ``json`` would give it.

orjson writes a body only when the child's fast checks vouch for it, and reads a body only when it
holds no 19-digit number; these tests hold both shortcuts to the ``json`` module's answers.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import struct

import orjson
import pytest

from farm_dagster.engine import protocol
from tests.test_sdk import _compact_variants

SYMBOLS = {"AAA": 0, "BBB": 1}


def _reference(text: bytes) -> object:
    """What the parent decoded before orjson: ``json`` with NaN and the infinities as NaN."""
    return json.loads(
        text.decode(json.detect_encoding(text), "surrogatepass"), parse_constant=lambda _: math.nan
    )


def _same(a: object, b: object) -> bool:
    """Equal values of equal types (1 is not 1.0; NaN equals NaN; dict key order counts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _parent_check(message: bytes) -> protocol.CheckedDecision:
    equity, body = protocol.decode_decisions_raw(message)
    assert equity == 1.5
    return protocol.check_decision(body["decisions"][0], SYMBOLS)


def test_the_fast_writer_never_changes_what_the_parent_decides() -> None:
    """Every compact decision, each field bent (NaN, infinities, wrong types): the parent checks the
    message the child wrote exactly as it checks the json module's message, and when orjson wrote
    it, exactly as the child's own mirror checked it."""
    orjson_written = 0
    for raw in _compact_variants():
        child, plain = protocol.check_plain(list(raw), SYMBOLS)
        assert child == protocol.check_decision(list(raw), SYMBOLS), raw
        message = protocol.encode_decisions(1.5, {"decisions": [raw]}, plain)
        by_json = protocol.encode_decisions(1.5, None) + protocol.dumps({"decisions": [raw]}).encode()
        assert _parent_check(message) == _parent_check(by_json), raw
        if plain:
            assert _parent_check(message) == child, raw
            orjson_written += 1
    assert orjson_written > 40  # the fast writer does carry the usual decisions


def test_a_body_mixing_plain_and_unusual_decisions_goes_through_json_whole() -> None:
    nan_confidence = ["AAA", "BUY", 1.0, None, None, None, None, math.nan, "", None, None, None]
    usual = ["AAA", "BUY", 1.0, None, None, None, None, 0.5, "", None, None, None]
    _, plain = protocol.check_plain(nan_confidence, SYMBOLS)
    assert not plain
    message = protocol.encode_decisions(0.0, {"decisions": [usual, nan_confidence]}, plain)
    _, body = protocol.decode_decisions_raw(message)
    checked = protocol.check_decision(body["decisions"][1], SYMBOLS)
    assert checked.reject_reason is not None and "confidence" in checked.reject_reason


def test_orjson_refusals_fall_back_to_json_when_writing() -> None:
    """A 70-bit integer or a lone surrogate: orjson cannot write them, json does, and they arrive."""
    body = {
        "decisions": [["AAA", "HOLD", None, None, None, None, None, None, "\ud800", {"n": 2**70}, None, None]]
    }
    _, decoded = protocol.decode_decisions_raw(protocol.encode_decisions(0.0, body, plain=True))
    assert decoded == body


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(
            [0, -1, 7, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**70), 10**25]
        )
    if kind == 2:
        return struct_double(rng)
    if kind == 3:
        return rng.choice(
            [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e16, 1e-5]
        )
    if kind == 4:
        return "".join(
            rng.choice(["a", "é", "\x00", '"', "\\", "\n", "\ud83d\ude00", "\ud800", " "])
            for _ in range(rng.randrange(6))
        )
    if kind == 5:
        return rng.uniform(-1e6, 1e6)
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {f"k{rng.randrange(4)}": _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def struct_double(rng: random.Random) -> float:
    """A finite double from random bits: any exponent, subnormals included."""
    while True:
        (number,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if math.isfinite(number):
            return number


def test_decoding_gives_what_json_gives_on_random_bodies() -> None:
    """Random bodies (NaN, 64-bit edges and beyond, any double, escapes, lone surrogates, nesting),
    written by json and by orjson, and hand-picked texts: decode_json must equal the json module."""
    rng = random.Random(20261126)
    texts: list[bytes] = [
        b'{"a":1,"b":2,"a":3}',
        b"[1E400, -1E400, 1e-400]",
        b"[18446744073709551615, 18446744073709551616, -9223372036854775809]",
        b'{"x": 0.1234567890123456789}',
        b"\xef\xbb\xbf{}",
        b'["\\ud800"]',
        b"[" * 1100 + b"]" * 1100,
        b"[" * 200 + b"]" * 200,
        b"[1.00000000000000011102230246251565404236316680908203125]",
    ]
    for _ in range(3000):
        value = {"decisions": [_random_value(rng) for _ in range(rng.randrange(4))]}
        texts.append(protocol.dumps(value).encode())
        with contextlib.suppress(TypeError):
            texts.append(orjson.dumps(value))
    fast = 0
    for text in texts:
        payload = bytes((protocol.DECISIONS,)) + text
        try:
            expected = _reference(text)
        except (ValueError, RecursionError):  # what the parent reports as a protocol breach
            with pytest.raises(protocol.ProtocolError):
                protocol.decode_json(payload)
            continue
        assert _same(protocol.decode_json(payload), expected), text[:80]
        try:
            orjson.loads(text)
            fast += 1
        except orjson.JSONDecodeError:
            pass
    assert fast > 2000  # most bodies do take the fast reader


def test_long_fractions_take_the_fast_reader_and_long_integers_the_exact_one(monkeypatch) -> None:
    """A float below 0.01 with 17 significant digits has 19 digits after its point: orjson reads
    it (the same double as json); an integer of 19 digits or more still goes to json, exactly."""
    fraction = (
        b'{"decisions":[["AAA","HOLD",null,null,null,null,null,0.0033355853740733907,"",null,null,null]]}'
    )
    big = b'{"decisions":[],"n":123456789012345678901}'
    expected = {text: json.loads(text) for text in (fraction, big)}

    class _NoJson:
        def decode(self, *_: object) -> object:
            raise AssertionError("went through the json module")

    monkeypatch.setattr(protocol, "_DECODER", _NoJson())
    decoded = protocol.decode_json(bytes((protocol.DECISIONS,)) + fraction)
    assert decoded == expected[fraction]
    with pytest.raises(AssertionError, match="json module"):
        protocol.decode_json(bytes((protocol.DECISIONS,)) + big)
    monkeypatch.undo()
    value = protocol.decode_json(bytes((protocol.DECISIONS,)) + big)["n"]
    assert value == 123456789012345678901 and type(value) is int
