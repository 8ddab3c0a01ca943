# expect: rule=none status=killed error=MemoryError match=memory limit
"""Valid code that allocates without end: only the memory limit stops it."""

from farm_dagster.sdk import Agent


class MemoryBomb(Agent):
    def on_bar(self, ctx):
        hoard = []
        while True:
            hoard.append(bytearray(50_000_000))
