# expect: rule=forbidden-import line=4 status=failed error=SandboxImportDenied match=importing 'socket'
"""Phones home: opens a TCP connection on its first bar."""

import socket

from farm_dagster.sdk import Agent, hold


class NetworkCall(Agent):
    def on_bar(self, ctx):
        conn = socket.create_connection(("93.184.216.34", 80), timeout=2)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return hold(ctx.symbols[0], reasoning=conn.recv(100).decode())
