# expect: rule=dunder-access line=12 status=failed error=PermissionError|LookupError match=Operation not permitted|not loaded
"""Starts a program through _posixsubprocess.fork_exec (found via __subclasses__ and __globals__),
which raises no audit event: seccomp is what stops it. The sandbox's own modules no longer load
``subprocess``: then there is nothing to reach, and the agent says so (test_lockdown checks seccomp's
refusal of fork and exec directly)."""

from farm_dagster.sdk import Agent, hold


class RawForkExec(Agent):
    def on_bar(self, ctx):
        found = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "Popen" and c.__module__ == "subprocess"]
        if not found:
            raise LookupError("subprocess is not loaded in the sandbox: no fork_exec to reach")
        fork_exec = found[0]._execute_child.__globals__["_fork_exec"]
        pid = fork_exec(
            [b"/bin/sh", b"-c", b"touch /tmp/farm-hostile-forkexec"], [b"/bin/sh"], True, (), None, None,
            -1, -1, -1, -1, -1, -1, -1, 3, False, False, -1, None, None, None, -1, None, False,
        )
        return hold(ctx.symbols[0], reasoning=str(pid))
