// Helpers for the centrifuge_*.js scripts, which drive the real Centrifuge
// SDK (npm `centrifuge`, pinned in package-lock.json) against a hubbub that
// tests/centrifuge.rs started. Each script takes its settings from the
// environment: HUBBUB_URL (ws://127.0.0.1:PORT), HUBBUB_ADMIN
// (http://127.0.0.1:PORT), HUBBUB_SECRET (JWT secret), HUBBUB_API_KEY.
// A script prints "ok ..." and exits 0, or exits 1 with "failed: why".
"use strict";

const crypto = require("crypto");
const http = require("http");
const WebSocket = require("ws");
const { Centrifuge } = require("centrifuge");

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} must be set`);
    process.exit(2);
  }
  return value;
};

function fail(why) {
  console.error(`failed: ${why}`);
  process.exit(1);
}

// The whole run is bounded: a hung server fails the test instead of hanging it.
function bound(secs) {
  const timer = setTimeout(() => fail(`timed out after ${secs} s`), secs * 1000);
  timer.unref();
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");

// An HS256 token for `sub`, expiring in `ttl` seconds.
function token(sub, ttl = 3600, extra = {}) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttl, ...extra };
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = crypto.createHmac("sha256", env("HUBBUB_SECRET")).update(head).digest("base64url");
  return `${head}.${sig}`;
}

// A Centrifuge SDK client of /connection/websocket (not yet connected).
function client(options) {
  const url = `${env("HUBBUB_URL")}/connection/websocket`;
  return new Centrifuge(url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, ...options });
}

// Resolves with the first `event` of `emitter` (rejects on timeout).
function once(emitter, event, secs = 8) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} in ${secs} s`)), secs * 1000);
    emitter.once(event, (ctx) => {
      clearTimeout(timer);
      resolve(ctx);
    });
  });
}

// One admin API call: resolves with [status, parsed body].
function api(method, path, body) {
  const url = new URL(path, env("HUBBUB_ADMIN"));
  const payload = body === undefined ? "" : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method,
      headers: {
        authorization: `Bearer ${env("HUBBUB_API_KEY")}`,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      },
    });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve([res.statusCode, text ? JSON.parse(text) : null]));
    });
    req.on("error", reject);
    req.end(payload);
  });
}

// Publishes `data` on `channel` through the server API.
async function publishApi(channel, data) {
  const [status, answer] = await api("POST", "/api/publish", { channel, data });
  check(status === 200, `publish ${JSON.stringify(data)}: ${status} ${JSON.stringify(answer)}`);
  return answer;
}

// A plain `/ws` client (docs/PROTOCOL.md): `call(method, params)` resolves
// with the reply; pushes go to `onPush`.
function wsClient(tok, onPush = () => {}) {
  const socket = new WebSocket(`${env("HUBBUB_URL")}/ws?token=${tok}`);
  const waiting = new Map();
  let next = 1;
  socket.on("message", (text) => {
    const msg = JSON.parse(text);
    if (msg.id && waiting.has(msg.id)) {
      waiting.get(msg.id)(msg);
      waiting.delete(msg.id);
    } else if (msg.push) {
      onPush(msg);
    }
  });
  const opened = new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  return {
    socket,
    async call(method, params) {
      await opened;
      const id = next++;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve) => waiting.set(id, resolve));
    },
  };
}

function check(cond, why) {
  if (!cond) fail(why);
}

module.exports = { api, bound, check, client, fail, once, publishApi, token, wsClient };
