"""The soak's hostile clients (bench/soak.py), on raw loopback sockets: each kind, what it must see.

Each is bounded in time and contacts 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json

HOST = "127.0.0.1"  # loopback only, by design: this script never contacts another address
# what a hostile client of each kind must see: an HTTP status, "closed" (the server shut the connection)
# or "abandoned" (the client left on purpose, with no answer expected)
EXPECTED = {
    "oversized": {"413"},
    "oversized_chunked": {"413", "closed"},
    "malformed_json": {"400"},
    "wrong_shape": {"422"},
    "slow_headers": {"abandoned", "closed"},
    "slow_body": {"200"},
    "cut_body": {"abandoned"},
    "no_read": {"abandoned"},
}


async def _status(reader, timeout: float) -> str:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ConnectionError:
        return "closed"
    except asyncio.TimeoutError:  # no answer in time: never an expected outcome
        return "timeout"
    parts = line.split()
    return parts[1].decode() if len(parts) >= 2 else "closed"


async def _request(port: int, head: str, body: bytes, timeout: float = 60) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await _status(reader, timeout)
    finally:
        writer.close()


def _head(length: int | None, extra: str = "") -> str:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST /v1/classify HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{size}{extra}\r\n"
    )


async def hostile(kind: str, port: int, max_body: int, text: str, slow: float) -> str:
    """One hostile client of `kind`; returns its outcome (see EXPECTED)."""
    if kind == "oversized":
        return await _request(port, _head(max_body + 1), b"")
    if kind == "malformed_json":
        body = b'{"texts": ["Profit rose", '
        return await _request(port, _head(len(body)), body)
    if kind == "wrong_shape":
        body = b'{"texts": "not a list"}'
        return await _request(port, _head(len(body)), body)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        if kind == "oversized_chunked":  # no length announced: the server must count while it streams
            writer.write(_head(None, "Transfer-Encoding: chunked\r\n").encode())
            chunk = b"x" * 65536
            try:
                for _ in range(max_body // len(chunk) + 4):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
            except ConnectionError:
                pass
            return await _status(reader, 30)
        if kind == "slow_headers":  # slowloris: a header line a second, never finished
            writer.write(f"POST /v1/classify HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            for i in range(int(slow)):
                await writer.drain()
                if reader.at_eof():
                    return "closed"
                writer.write(f"X-Slow-{i}: x\r\n".encode())
                await asyncio.sleep(1)
            return "abandoned"
        if kind == "slow_body":  # a valid request whose body trickles in over `slow` seconds
            body = json.dumps({"texts": [text]}).encode()
            writer.write(_head(len(body)).encode())
            step = max(1, len(body) // max(1, int(slow * 2)))
            for i in range(0, len(body), step):
                writer.write(body[i : i + step])
                await writer.drain()
                await asyncio.sleep(0.5)
            return await _status(reader, 120)
        if kind == "cut_body":  # announces 500 bytes, sends 20, leaves
            writer.write(_head(500).encode() + b'{"texts": ["Profit r')
            await writer.drain()
            return "abandoned"
        if kind == "no_read":  # a full, valid request of 2 texts; the answer is never read
            body = json.dumps({"texts": [text] * 2}).encode()
            writer.write(_head(len(body)).encode() + body)
            await writer.drain()
            return "abandoned"
        raise ValueError(kind)
    finally:
        writer.close()
