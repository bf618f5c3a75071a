"""Echo round trips with the `websockets` library: text, binary, ping, close."""
import asyncio
import os
import ssl
import sys

from websockets.asyncio.client import connect


def tls_context(url: str):
    """For wss://, trust only the test CA named by HUBBUB_TEST_CA."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=os.environ["HUBBUB_TEST_CA"])
    return context


async def main(url: str) -> None:
    extra = {"ssl": tls_context(url)} if url.startswith("wss://") else {}
    async with connect(url, max_size=2**21, open_timeout=10, close_timeout=5, **extra) as ws:
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
