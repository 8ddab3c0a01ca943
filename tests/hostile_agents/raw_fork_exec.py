# expect: rule=dunder-access line=10 status=failed error=PermissionError match=Operation not permitted
"""Starts a program through _posixsubprocess.fork_exec (found via __subclasses__ and __globals__),
which raises no audit event: seccomp is what stops it."""

from farm_dagster.sdk import Agent, hold


class RawForkExec(Agent):
    def on_bar(self, ctx):
        popen = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "Popen" and c.__module__ == "subprocess"][0]
        fork_exec = popen._execute_child.__globals__["_fork_exec"]
        pid = fork_exec(
            [b"/bin/sh", b"-c", b"touch /tmp/farm-hostile-forkexec"], [b"/bin/sh"], True, (), None, None,
            -1, -1, -1, -1, -1, -1, -1, 3, False, False, -1, None, None, None, -1, None, False,
        )
        return hold(ctx.symbols[0], reasoning=str(pid))
