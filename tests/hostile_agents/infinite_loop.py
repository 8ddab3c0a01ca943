# expect: rule=none status=killed error=SandboxCrashed match=cpu limit
"""Valid code that never returns from on_bar: only the CPU limit stops it."""

from farm_dagster.sdk import Agent


class InfiniteLoop(Agent):
    def on_bar(self, ctx):
        n = 0
        while True:
            n += 1
