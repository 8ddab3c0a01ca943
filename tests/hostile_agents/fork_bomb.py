# expect: rule=forbidden-import line=4 status=failed error=SandboxImportDenied match=importing 'os'
"""Classic fork bomb."""

import os

from farm_dagster.sdk import Agent


class ForkBomb(Agent):
    def on_bar(self, ctx):
        while True:
            os.fork()
