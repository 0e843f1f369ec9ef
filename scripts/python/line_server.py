"""The Python side of a benchmark's request server (bench/lib.mjs startServer): one JSON object per
line each way, so that a benchmark keeps a model loaded here and interleaves blocks of its steps
with ours at no start-up cost."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict


def serve_lines(ready: Dict[str, Any], handlers: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]]) -> None:
    """Prints `ready` (with "ready": true), then answers each request line {"cmd": NAME, ...} with
    handlers[NAME](request) as one line, until {"cmd": "quit"} or the end of stdin. An unknown
    command, or a handler's exception, is answered {"error": ...}, which startServer throws."""
    print(json.dumps({"ready": True, **ready}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        cmd = req.get("cmd")
        if cmd == "quit":
            break
        handler = handlers.get(cmd)
        try:
            reply = handler(req) if handler else {"error": f"unknown command {cmd!r}"}
        except Exception as err:  # the benchmark reports it and stops
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)
