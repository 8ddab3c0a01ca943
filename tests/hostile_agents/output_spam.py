# expect: rule=none status=killed|timeout error=SandboxCrashed|Timeout match=cpu limit|wall-clock wall=5
"""Floods stdout and stderr until something stops it."""

import logging

from farm_dagster.sdk import Agent

log = logging.getLogger("spam")


class OutputSpam(Agent):
    def on_bar(self, ctx):
        line = "spam " * 2000
        while True:
            print(line)
            log.error(line)
