"""The chat's backend, Python 3 standard library only.

It owns what hubbub does not: who may use which name (it issues the JWTs),
what a message is (hubbub's publish hook asks it about every publication;
it stores the message in SQLite and answers with the data to publish, so
the author and the time are the backend's, never the client's), the long
history (pages older than what hubbub keeps), and private messages (stored,
then handed to hubbub's `POST /api/send`, which keeps them in the
recipient's mailbox until the recipient is back).

run.py starts it next to hubbub; `Chat` is the state, `Handler` the HTTP.
"""

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOMS = ["general", "random", "help"]
NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")  # with fullmatch: no trailing newline slips in
MAX_TEXT_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024
TOKEN_TTL_SECS = 600
PAGE_LIMIT_MAX = 100
# Private messages one user may send per window (each is a stored row and
# a mailbox entry: a flood is refused, not stored).
PRIVATE_PER_WINDOW, PRIVATE_WINDOW_SECS = 20, 10
HERE = Path(__file__).resolve().parent
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    # centrifuge-js 5.8.0, the browser build, copied from npm (MIT licence).
    "/centrifuge.js": ("centrifuge.js", "text/javascript; charset=utf-8"),
}
# The page runs only its own files and talks only to its origin and hubbub.
CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'"


class Refused(Exception):
    """A request the chat refuses: HTTP `status` and Centrifugo-style `code`."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dm_room(a, b):
    """The one conversation of two users, whoever writes first."""
    return "dm:" + ":".join(sorted([a, b]))


def may_read(user, room):
    """A public room, or a conversation `user` is one of the two of."""
    if room in ROOMS:
        return True
    parts = room.split(":")
    return len(parts) == 3 and user in parts[1:] and room == dm_room(parts[1], parts[2])


def clean_text(data):
    """The text of a message a client sent, or `Refused`."""
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise Refused(400, 400, "a message needs some text")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise Refused(413, 413, f"a message has at most {MAX_TEXT_CHARS} characters")
    return text


class Chat:
    def __init__(self, db_path, secret, api_url, api_key, ws_port):
        self.secret = secret.encode()
        self.api_url, self.api_key, self.ws_port = api_url, api_key, ws_port
        self.lock = threading.Lock()
        self.sent = {}  # user -> times of its recent private messages
        self.db = sqlite3.connect(db_path, check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " room TEXT NOT NULL, user TEXT NOT NULL, text TEXT NOT NULL, time REAL NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS by_room ON messages (room, id)")
        self.db.commit()

    # -- tokens ---------------------------------------------------------------

    def token(self, user):
        if not isinstance(user, str) or not NAME.fullmatch(user):
            raise Refused(400, 400, "a name is 1-24 letters, digits, _ or -")
        claims = {
            "sub": user,
            "exp": int(time.time()) + TOKEN_TTL_SECS,
            "channels": ["room:" + r for r in ROOMS],
        }
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        signed = f"{head}.{body}"
        sig = hmac.new(self.secret, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{b64url(sig)}"

    def user_of(self, authorization):
        """The user of a `Bearer` token this backend signed, or `Refused`."""
        parts = (authorization or "").removeprefix("Bearer ").split(".")
        if len(parts) != 3:
            raise Refused(401, 401, "a token is required")
        sig = hmac.new(self.secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            good = hmac.compare_digest(sig, unb64url(parts[2]))
            claims = json.loads(unb64url(parts[1])) if good else {}
        except ValueError:
            good, claims = False, {}
        if not good or not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise Refused(401, 401, "bad token")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise Refused(401, 401, "token expired")
        return claims["sub"]

    # -- messages -------------------------------------------------------------

    def store(self, room, user, text):
        with self.lock:
            now = time.time()
            cur = self.db.execute(
                "INSERT INTO messages (room, user, text, time) VALUES (?, ?, ?, ?)", (room, user, text, now)
            )
            self.db.commit()
            return {"id": cur.lastrowid, "room": room, "user": user, "text": text, "time": now}

    def publish_hook(self, call):
        """hubbub's publish hook: the answer's `data` is what gets published.
        The author is the proxy's `user` (from the verified token), never
        anything the client put in its data."""
        user, channel = call.get("user"), call.get("channel")
        if not isinstance(user, str) or not user:
            raise Refused(403, 403, "sign in to write")
        if not isinstance(channel, str) or channel.removeprefix("room:") not in ROOMS:
            raise Refused(403, 403, "not a chat room")
        return self.store(channel.removeprefix("room:"), user, clean_text(call.get("data")))

    def page(self, user, query):
        """Messages of a room (or of a conversation `user` is part of), at
        most `limit`, older than `before` or newer than `after`, oldest first."""
        room = (query.get("room") or [""])[0]
        if not may_read(user, room):
            raise Refused(403, 403, "not a room or a conversation of yours")
        try:
            limit = max(1, min(PAGE_LIMIT_MAX, int((query.get("limit") or ["30"])[0])))
            before = int((query.get("before") or ["0"])[0])
            after = int((query.get("after") or ["0"])[0])
        except ValueError:
            raise Refused(400, 400, "limit, before and after are numbers") from None
        with self.lock:
            if after:
                sql = "SELECT id, room, user, text, time FROM messages WHERE room = ? AND id > ? ORDER BY id LIMIT ?"
                rows = self.db.execute(sql, (room, after, limit)).fetchall()
            else:
                sql = "SELECT id, room, user, text, time FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?"
                rows = self.db.execute(sql, (room, before or 2**62, limit)).fetchall()[::-1]
        keys = ("id", "room", "user", "text", "time")
        return {"messages": [dict(zip(keys, row)) for row in rows]}

    def message(self, user, query):
        """One message by id, if `user` may read its room: how the page checks
        a private message hubbub delivered (any client can `send` a user
        anything on `/ws`; what this backend stored is the truth)."""
        try:
            wanted = int((query.get("id") or [""])[0])
        except ValueError:
            raise Refused(400, 400, "id is a number") from None
        with self.lock:
            row = self.db.execute("SELECT id, room, user, text, time FROM messages WHERE id = ?", (wanted,)).fetchone()
        if row is None or not may_read(user, row[1]):
            raise Refused(404, 404, "no such message")
        return dict(zip(("id", "room", "user", "text", "time"), row))

    def private(self, sender, body):
        """A private message: stored, then sent through hubbub to both
        users' mailboxes (the sender's other tabs see it too)."""
        to = body.get("to") if isinstance(body, dict) else None
        if not isinstance(to, str) or not NAME.fullmatch(to):
            raise Refused(400, 400, "who is it for?")
        text = clean_text(body)
        with self.lock:
            now = time.time()
            recent = [t for t in self.sent.get(sender, []) if now - t < PRIVATE_WINDOW_SECS]
            if len(recent) >= PRIVATE_PER_WINDOW:
                raise Refused(429, 429, "too many private messages: wait a few seconds")
            self.sent[sender] = recent + [now]
            if len(self.sent) > 10_000:  # forget senders quiet for a window
                self.sent = {u: ts for u, ts in self.sent.items() if now - ts[-1] < PRIVATE_WINDOW_SECS}
        message = self.store(dm_room(sender, to), sender, text)
        message["to"] = to
        self.api("/api/send", {"user": to, "data": message})
        if sender != to:
            try:  # the sender's other pages; it has its own copy already
                self.api("/api/send", {"user": sender, "data": message})
            except Refused:
                pass
        return message

    def api(self, path, payload):
        request = urllib.request.Request(
            self.api_url + path,
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.load(answer)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise Refused(502, 502, f"hubbub did not take it: {e}") from None


class Handler(BaseHTTPRequestHandler):
    chat: Chat = None  # set by serve()
    hook_path = "/hook/publish"
    timeout = 10  # seconds a client may take to send its request (no slow-loris threads)

    def log_message(self, fmt, *args):  # quiet: one line per refusal is enough
        pass

    def reply(self, status, body, content_type="application/json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(raw)

    def body(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            raise Refused(400, 400, "bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            raise Refused(413, 413, "request too large")
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise Refused(400, 400, "the body is not JSON") from None

    def do_GET(self):
        url = urlsplit(self.path)
        try:
            if url.path in STATIC:
                name, kind = STATIC[url.path]
                return self.reply(200, (HERE / "static" / name).read_bytes(), kind)
            if url.path == "/api/config":
                host = (self.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
                ws = f"ws://{host}:{self.chat.ws_port}/connection/websocket"
                return self.reply(200, {"ws": ws, "rooms": ROOMS, "max_text": MAX_TEXT_CHARS})
            if url.path == "/api/message":
                user = self.chat.user_of(self.headers.get("Authorization"))
                return self.reply(200, self.chat.message(user, parse_qs(url.query)))
            if url.path == "/api/history":
                user = self.chat.user_of(self.headers.get("Authorization"))
                return self.reply(200, self.chat.page(user, parse_qs(url.query)))
            raise Refused(404, 404, "not found")
        except Refused as e:
            self.reply(e.status, {"error": e.message})

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == self.hook_path:
            return self.hook()
        try:
            body = self.body()
            if path == "/api/token":
                user = body.get("user") if isinstance(body, dict) else None
                return self.reply(200, {"token": self.chat.token(user)})
            if path == "/api/private":
                sender = self.chat.user_of(self.headers.get("Authorization"))
                return self.reply(200, self.chat.private(sender, body))
            raise Refused(404, 404, "not found")
        except Refused as e:
            self.reply(e.status, {"error": e.message})

    def hook(self):
        """Answers hubbub in Centrifugo's proxy JSON: always 200, a refusal
        is an `error` the client sees with its code."""
        try:
            call = self.body()
            if not isinstance(call, dict):
                raise Refused(400, 400, "bad hook call")
            answer = {"result": {"data": self.chat.publish_hook(call)}}
        except Refused as e:
            answer = {"error": {"code": e.code, "message": e.message}}
        self.reply(200, answer)


def serve(chat, host, port, hook_path):
    """A bound server (port 0 picks one); call `serve_forever` on it."""
    Handler.chat, Handler.hook_path = chat, hook_path
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
