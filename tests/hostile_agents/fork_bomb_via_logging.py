# expect: rule=forbidden-import line=11 status=failed error=SandboxViolation match=starting processes
"""Fork bomb that reaches os through an allowed module (logging.os) instead of importing it."""

import logging

from farm_dagster.sdk import Agent


class ForkBombViaLogging(Agent):
    def on_bar(self, ctx):
        fork = logging.os.fork
        while True:
            fork()
