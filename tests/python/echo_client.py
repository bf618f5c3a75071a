"""Echo round trips with the `websockets` library: text, binary, ping, close."""
import asyncio
import os
import sys

from websockets.asyncio.client import connect


async def main(url: str) -> None:
    async with connect(url, max_size=2**21, open_timeout=10, close_timeout=5) as ws:
        for i in range(100):
            text = f"message {i} ✓ ünïcödé"
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert got == text, (got, text)
            blob = os.urandom(1 + i * 997)
            await ws.send(blob)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert got == blob, "binary echo differs"
        pong = await ws.ping(b"hello")
        await asyncio.wait_for(pong, 10)
        await ws.close(code=1000, reason="done")
        assert ws.close_code == 1000, ws.close_code
    print("ok 200 messages")


asyncio.run(main(sys.argv[1]))
