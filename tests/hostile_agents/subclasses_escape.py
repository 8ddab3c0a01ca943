# expect: rule=dunder-access line=10 status=failed error=SandboxViolation match=starting programs
"""The textbook escape: ().__class__.__base__.__subclasses__() -> os._wrap_close -> os.system."""

from farm_dagster.sdk import Agent, hold


class SubclassesEscape(Agent):
    def on_bar(self, ctx):
        system = None
        for cls in ().__class__.__base__.__subclasses__():
            if cls.__name__ == "_wrap_close":
                system = cls.__init__.__globals__["system"]
        system("touch /tmp/farm-hostile-escape")
        return hold(ctx.symbols[0])
