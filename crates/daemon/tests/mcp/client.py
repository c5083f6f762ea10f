"""The official MCP Python SDK against ironclawd's /mcp, over streamable
HTTP (`http`) or through `ironclaw mcp` on stdio (`stdio`). Prints one JSON
object with what each step saw; crates/daemon/tests/mcp.rs checks it."""

import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def scenario(session, box, other):
    seen = {}
    await session.initialize()
    seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
    r = await session.call_tool("sandbox_create", {"name": box, "image": "mini"})
    seen["create"] = {"error": bool(r.is_error), "body": json.loads(text(r)) if not r.is_error else text(r)}
    r = await session.call_tool("sandbox_exec", {"sandbox": box, "command": "echo hi; echo oops >&2; exit 3"})
    seen["exec"] = json.loads(text(r))
    r = await session.call_tool("sandbox_exec", {"sandbox": box, "argv": ["cat"], "stdin": "fed"})
    seen["exec_stdin"] = json.loads(text(r))
    r = await session.call_tool("sandbox_exec", {"sandbox": box})
    seen["exec_bad"] = {"error": bool(r.is_error), "text": text(r)}
    r = await session.call_tool("file_write", {"sandbox": box, "path": "/root/dir/a.txt", "content": "hello mcp\n"})
    seen["write"] = json.loads(text(r))
    r = await session.call_tool("file_read", {"sandbox": box, "path": "/root/dir/a.txt"})
    seen["read"] = json.loads(text(r))
    r = await session.call_tool("file_read", {"sandbox": box, "path": "/root/none"})
    seen["read_missing"] = {"error": bool(r.is_error), "text": text(r)}
    r = await session.call_tool("sandbox_list", {})
    seen["list"] = [s["name"] for s in json.loads(text(r))["sandboxes"]]
    r = await session.call_tool("sandbox_exec", {"sandbox": other, "command": "id"})
    seen["other"] = {"error": bool(r.is_error), "text": text(r)}
    r = await session.call_tool("file_read", {"sandbox": other, "path": "/etc/hostname"})
    seen["other_read"] = {"error": bool(r.is_error), "text": text(r)}
    if os.environ.get("ASK"):
        r = await session.call_tool("ask_agent", {"prompt": "what is in the sandbox?"})
        seen["ask"] = {"error": bool(r.is_error), "text": text(r)}
    r = await session.call_tool("sandbox_remove", {"sandbox": box})
    seen["remove"] = {"error": bool(r.is_error), "text": text(r)}
    return seen


async def main():
    transport, box, other = sys.argv[1], sys.argv[2], sys.argv[3]
    url, token = os.environ["BASE"], os.environ["TOKEN"]
    if transport == "http":
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, streamable_http_client(url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                seen = await scenario(session, box, other)
    else:
        params = StdioServerParameters(
            command=os.environ["IRONCLAW_BIN"],
            args=["mcp"],
            env={"IRONCLAW_HOST": url, "IRONCLAW_TOKEN": token, "HOME": os.environ.get("HOME", "/tmp")},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                seen = await scenario(session, box, other)
    print(json.dumps(seen))


asyncio.run(main())
