# expect: rule=forbidden-builtin line=9 status=failed error=SandboxViolation match=writing files
"""Drops a file on the host."""

from farm_dagster.sdk import Agent, hold


class WriteFile(Agent):
    def on_bar(self, ctx):
        with open("/tmp/farm-hostile-written.txt", "w") as handle:
            handle.write("owned")
        return hold(ctx.symbols[0])
