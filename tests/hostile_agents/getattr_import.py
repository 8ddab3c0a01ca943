# expect: rule=dunder-access line=9 status=failed error=SandboxImportDenied match=importing 'os'
"""Imports os through getattr on __builtins__ with a computed name, then runs a shell command."""

from farm_dagster.sdk import Agent, hold


class GetattrImport(Agent):
    def on_bar(self, ctx):
        table = __builtins__
        name = "__imp" + "ort__"
        importer = table[name] if isinstance(table, dict) else getattr(table, name)
        importer("o" + "s").system("touch /tmp/farm-hostile-getattr")
        return hold(ctx.symbols[0])
