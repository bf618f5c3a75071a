// Echo round trips with the `ws` library over wss://: text, binary, ping,
// close. Usage: node echo_client.js wss://localhost:PORT/echo
// Trusts only the CA file named by HUBBUB_TEST_CA (passed as `ca`, so the
// system roots do not count); prints "ok 200 messages" on success and
// exits non-zero with the reason otherwise.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const WebSocket = require("ws");

const url = process.argv[2];
if (!url || !url.startsWith("wss://")) {
  console.error("usage: node echo_client.js wss://HOST:PORT/PATH");
  process.exit(2);
}
const caFile = process.env.HUBBUB_TEST_CA;
if (!caFile) {
  console.error("HUBBUB_TEST_CA must name the test CA's PEM file");
  process.exit(2);
}

function fail(why) {
  console.error(`failed: ${why}`);
  process.exit(1);
}

// The whole run is bounded: a hung server fails the test instead of hanging it.
const timer = setTimeout(() => fail("timed out after 20 s"), 20000);

const ws = new WebSocket(url, {
  ca: fs.readFileSync(caFile),
  rejectUnauthorized: true,
  maxPayload: 2 ** 21,
  handshakeTimeout: 10000,
});

const expected = [];
for (let i = 0; i < 100; i++) {
  expected.push({ binary: false, data: Buffer.from(`message ${i} ✓ ünïcödé`) });
  expected.push({ binary: true, data: crypto.randomBytes(1 + i * 997) });
}
let next = 0;

function sendNext() {
  const m = expected[next];
  ws.send(m.data, { binary: m.binary });
}

ws.on("open", () => {
  sendNext();
});
ws.on("message", (data, isBinary) => {
  const want = expected[next];
  if (isBinary !== want.binary) fail(`message ${next}: binary=${isBinary}, sent binary=${want.binary}`);
  if (!Buffer.from(data).equals(want.data)) fail(`message ${next}: echo differs (${data.length} bytes back, ${want.data.length} sent)`);
  next += 1;
  if (next < expected.length) {
    sendNext();
  } else {
    ws.ping(Buffer.from("hello"));
  }
});
ws.on("pong", (data) => {
  if (data.toString() !== "hello") fail(`pong carried ${JSON.stringify(data.toString())}`);
  ws.close(1000, "done");
});
ws.on("close", (code) => {
  clearTimeout(timer);
  if (next !== expected.length) fail(`closed with ${code} after ${next} of ${expected.length} echoes`);
  if (code !== 1000) fail(`close code ${code}`);
  console.log(`ok ${next} messages`);
});
ws.on("error", (err) => fail(err.message));
