# expect: rule=forbidden-import line=5 status=failed error=ProtocolError match=nested too deeply
"""Forges its answers: a DECISIONS message whose JSON nests 200,000 arrays deep. The parent's JSON
decoder recurses once per level; the run must end as a protocol failure, not crash the caller."""

from farm_dagster.engine import protocol

from farm_dagster.sdk import Agent


class DeepJson(Agent):
    def setup(self, ctx):
        def forged(equity, body, plain=False):
            deep = b"[" * 200_000 + b"]" * 200_000
            return bytes((protocol.DECISIONS,)) + protocol._EQUITY.pack(equity) + b'{"decisions":' + deep + b"}"

        protocol.encode_decisions = forged

    def on_bar(self, ctx):
        return None
