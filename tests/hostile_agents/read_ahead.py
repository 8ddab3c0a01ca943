# expect: rule=forbidden-import line=4 status=failed error=SandboxImportDenied match=importing 'gc'
"""Hunts the process heap for a price array longer than the bars seen so far (future data)."""

import gc

from farm_dagster.sdk import Agent, hold


class ReadAhead(Agent):
    def setup(self, ctx):
        self.seen = 0

    def on_bar(self, ctx):
        self.seen += 1
        longest = max((len(o) for o in gc.get_objects() if hasattr(o, "shape")), default=0)
        return hold(ctx.symbols[0], reasoning=f"seen {self.seen}, longest array {longest}")
