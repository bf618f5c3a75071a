#!/usr/bin/env python3
"""Starts the chat: hubbub (a child process) and the backend (this process).

    cargo build --release && python3 examples/chat/run.py

then open the address it prints. The JWT secret and the API key are the
environment's HUBBUB_JWT_SECRET and HUBBUB_API_KEY if set, else random for
this run; they reach hubbub through its environment, not its command line.
Ctrl-C (or SIGTERM) stops both.
"""

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server  # noqa: E402  (the backend next to this file)

ROOT = Path(__file__).resolve().parent.parent.parent


def arguments():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hubbub", default=str(ROOT / "target/release/hubbub"), help="the hubbub binary")
    p.add_argument("--host", default="127.0.0.1", help="address both listen on (loopback by default)")
    p.add_argument("--port", type=int, default=8000, help="the web page and backend (0: any free port)")
    p.add_argument("--ws-port", type=int, default=8080, help="hubbub's WebSocket port (0: any free port)")
    p.add_argument("--db", default=str(Path(__file__).resolve().parent / "chat.sqlite3"), help="SQLite file")
    return p.parse_args()


def start_hubbub(args, hook_url, secret, api_key):
    """hubbub with the chat's settings; returns it and its two addresses."""
    if not Path(args.hubbub).exists():
        sys.exit(f"{args.hubbub} is missing: run `cargo build --release` first (or pass --hubbub)")
    env = dict(os.environ, HUBBUB_JWT_SECRET=secret, HUBBUB_API_KEY=api_key)
    command = [
        args.hubbub,
        f"--listen={args.host}:{args.ws_port}",
        f"--admin-listen={args.host}:0",
        f"--proxy-publish-url={hook_url}",
        # Rooms keep a day of messages for recovery and the newest page;
        # older pages come from SQLite.
        "--history-rule=room:*=500:86400",
        # Private messages wait a day in the recipient's mailbox.
        "--mailbox-size=200",
        "--mailbox-ttl-secs=86400",
        "--drain-secs=1",
        "--log-format=text",
        "--log-level=warn",
    ]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    lines = [child.stdout.readline().strip() for _ in range(2)]
    ws = lines[0].removeprefix("hubbub listening on ws://")
    admin = lines[1].removeprefix("hubbub admin on http://")
    if ws == lines[0] or admin == lines[1]:
        child.kill()
        sys.exit(f"hubbub did not start: {lines}")
    # Nothing else comes on stdout; drain it so hubbub never blocks on it.
    threading.Thread(target=child.stdout.read, daemon=True).start()
    return child, ws, admin


def main():
    args = arguments()
    secret = os.environ.get("HUBBUB_JWT_SECRET") or secrets.token_hex(32)
    api_key = os.environ.get("HUBBUB_API_KEY") or secrets.token_hex(24)
    # The hook's path is a secret of this run: only hubbub knows where to
    # post publications, so nobody else can slip a message into SQLite.
    hook_path = "/hook/publish/" + secrets.token_urlsafe(18)
    chat = server.Chat(args.db, secret, api_url=None, api_key=api_key, ws_port=None)
    try:
        web = server.serve(chat, args.host, args.port, hook_path)
    except OSError as e:
        sys.exit(f"cannot listen on {args.host}:{args.port}: {e} (try --port 0 for any free port)")
    host, port = web.server_address[:2]
    hubbub, ws, admin = start_hubbub(args, f"http://{host}:{port}{hook_path}", secret, api_key)
    chat.api_url, chat.ws_port = f"http://{admin}", int(ws.rsplit(":", 1)[1])
    print(f"hubbub listening on ws://{ws}", flush=True)
    print(f"hubbub admin on http://{admin}", flush=True)
    print(f"chat on http://{host}:{port}/", flush=True)

    def stop(*_):
        threading.Thread(target=web.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # If hubbub goes, the chat goes too.
    threading.Thread(target=lambda: (hubbub.wait(), stop()), daemon=True).start()
    try:
        web.serve_forever()
    finally:
        if hubbub.poll() is None:
            hubbub.terminate()
            try:
                hubbub.wait(timeout=5)
            except subprocess.TimeoutExpired:
                hubbub.kill()
    return 0 if hubbub.returncode in (0, -signal.SIGTERM, None) else 1


if __name__ == "__main__":
    sys.exit(main())
