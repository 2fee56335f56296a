"""Drives Pinacle's memory MCP server with the official MCP Python SDK
(PyPI `mcp`, installed by scripts/install-test-tools.sh) and prints what it
saw as one JSON object on stdout.

    mcp_client.py http URL TOKEN      Streamable HTTP, bearer TOKEN ("" for none)
    mcp_client.py stdio COMMAND...    a server spawned on stdin/stdout
"""

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def is_error(result):
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def scenario(server):
    out = {}
    async with Client(server) as client:
        out["protocol"] = client.protocol_version
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        out["schemas_have_query"] = any(
            t.name == "search_memory" and "query" in (getattr(t, "input_schema", None) or getattr(t, "inputSchema", None) or {}).get("properties", {})
            for t in tools.tools
        )
        added = await client.call_tool("add_memory", {"content": "the staging database is on port 5433", "metadata": {"env": "staging"}})
        out["add_error"] = is_error(added)
        if is_error(added):
            out["add_text"] = text_of(added)
            return out
        memory = json.loads(text_of(added))["memory"]
        mid = memory["id"]
        found = await client.call_tool("search_memory", {"query": "which port does staging postgres use", "top_k": 3})
        out["search_first"] = json.loads(text_of(found))["results"][0]["memory"]["id"] == mid
        got = await client.call_tool("get_memory", {"id": mid})
        out["get_content"] = json.loads(text_of(got))["content"]
        upd = await client.call_tool("update_memory", {"id": mid, "content": "the staging database is on port 6543"})
        out["update_version"] = json.loads(text_of(upd))["version"]
        hist = await client.call_tool("memory_history", {"id": mid})
        out["history_versions"] = len(json.loads(text_of(hist))["versions"])
        listed = await client.call_tool("list_memories", {"limit": 10})
        out["listed"] = len(json.loads(text_of(listed))["memories"])
        deleted = await client.call_tool("delete_memory", {"id": mid})
        out["delete_error"] = is_error(deleted)
        missing = await client.call_tool("get_memory", {"id": mid})
        out["get_after_delete_error"] = is_error(missing)
        out["get_after_delete_text"] = text_of(missing)
        bad = await client.call_tool("add_memory", {"content": ""})
        out["empty_add_error"] = is_error(bad)
    return out


def describe(e):
    inner = getattr(e, "exceptions", None)
    if inner:
        return "; ".join(describe(x) for x in inner)
    return f"{type(e).__name__}: {e}"


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, token = sys.argv[2], sys.argv[3]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        server = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    else:
        server = StdioServerParameters(command=sys.argv[2], args=sys.argv[3:], env=dict(os.environ))
    try:
        out = await scenario(server)
    except Exception as e:  # the test reads what failed
        out = {"exception": describe(e)}
    print(json.dumps(out))


asyncio.run(main())
