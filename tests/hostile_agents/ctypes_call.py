# expect: rule=forbidden-import line=4 status=failed error=SandboxViolation match=native code
"""Calls libc's system() through ctypes, reached via numpy.ctypeslib (ctypes itself is not importable)."""

import numpy.ctypeslib

from farm_dagster.sdk import Agent, hold


class CtypesCall(Agent):
    def on_bar(self, ctx):
        libc = numpy.ctypeslib.ctypes.CDLL(None)
        libc.system(b"touch /tmp/farm-hostile-ctypes")
        return hold(ctx.symbols[0])
