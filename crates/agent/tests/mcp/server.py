"""A small MCP server on the official `mcp` package, for the agent's MCP
client tests. `server.py stdio` speaks MCP on stdin/stdout; `server.py http`
serves streamable HTTP on 127.0.0.1 (a free port, printed as `port N`),
refusing requests without `Authorization: Bearer $MCP_TEST_TOKEN`."""

import os
import socket
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("ironclaw-test")


@server.tool()
def where() -> str:
    """Say where this server runs: hostname, pid, and whether /etc/ironclaw-box exists."""
    marker = os.path.exists("/etc/ironclaw-box")
    return f"host={socket.gethostname()} pid={os.getpid()} marker={marker} cwd={os.getcwd()}"


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def fail(why: str) -> str:
    """Always fails with the given reason."""
    raise ValueError(why)


def http():
    import uvicorn

    token = os.environ["MCP_TEST_TOKEN"]
    app = server.streamable_http_app()

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"bad token"})
                return
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"port {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(guarded, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        http()
    else:
        print("mcp test server starting", file=sys.stderr, flush=True)
        server.run()
