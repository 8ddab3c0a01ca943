# expect: rule=none status=timeout error=Timeout match=wall-clock wall=4
"""Blocks forever without using CPU (time reached through logging): only the wall-clock limit stops it."""

import logging

from farm_dagster.sdk import Agent


class SleepForever(Agent):
    def on_bar(self, ctx):
        logging.time.sleep(10**6)
