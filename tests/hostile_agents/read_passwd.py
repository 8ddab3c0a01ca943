# expect: rule=forbidden-builtin line=10 status=failed error=SandboxViolation match=reading '/etc/passwd'
"""Reads /etc/passwd and smuggles it out through the reasoning text."""

from farm_dagster.sdk import Agent, hold


class ReadPasswd(Agent):
    def on_bar(self, ctx):
        # reads a system file
        with open("/etc/passwd") as handle:
            return hold(ctx.symbols[0], reasoning=handle.read()[:500])
