#!/usr/bin/env node
// uWebSockets peer for benches/compare.py: NOT hubbub.
//
// The uWebSockets C++ server (uWebSockets.js v20.30.0, the build published as
// @trufflesuite/uws-js-unofficial) driven by a few lines of Node, serving the
// same endpoints as the baseline (benches/baseline) so compare.py can run
// every scenario against it:
//   GET /echo        every text or binary message goes back to its sender;
//   GET /room/NAME   every message a member sends goes to every member of
//                    room NAME, the sender included (app.publish: encoded
//                    once, queued per subscriber by uWS's topic tree);
//   anything else    404 Not Found.
//
// One event loop, one thread of JavaScript; compare.py pins the process to
// one core with taskset like the other servers. Settings follow hubbub's
// defaults where uWS has the same knob: 1 MiB largest message, 1 MiB of
// backlog per connection before publish skips it, no compression; idle
// timeout and pings are uWS's defaults.
//
// Prints exactly one line on start, `uws listening on ws://ADDR:PORT`, with
// the port the kernel bound (`--listen 127.0.0.1:0` picks a free one).

"use strict";

const path = require("path");

const MAX_MESSAGE_BYTES = 1 << 20;
const MAX_BACKLOG_BYTES = 1 << 20;

// The package's own entry point silently falls back to a pure-JS server when
// the native module does not load; a benchmark must fail instead.
function loadNative() {
  const pkg = path.dirname(require.resolve("@trufflesuite/uws-js-unofficial/package.json"));
  const name = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  try {
    return require(path.join(pkg, "binaries", name));
  } catch (err) {
    console.error(`uws: no native uWebSockets build ${name} for this Node (${process.version}): ${err.message}`);
    process.exit(1);
  }
}

function parseListen(argv) {
  let listen = "127.0.0.1:8082";
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--check") {
      // compare.py asks before a run: the native module loads, nothing listens.
      loadNative();
      process.stdout.write(`uws ok: uWebSockets.js native module for Node ${process.version}\n`);
      process.exit(0);
    } else if (argv[i] === "--listen" && i + 1 < argv.length) {
      listen = argv[++i];
    } else if (argv[i].startsWith("--listen=")) {
      listen = argv[i].slice("--listen=".length);
    } else {
      console.error(`usage: server.js [--listen HOST:PORT] [--check]; unknown argument ${JSON.stringify(argv[i])}`);
      process.exit(2);
    }
  }
  const match = /^([\d.]+):(\d+)$/.exec(listen);
  if (!match || Number(match[2]) > 65535) {
    console.error(`uws: --listen wants IPV4:PORT, got ${JSON.stringify(listen)}`);
    process.exit(2);
  }
  return { host: match[1], port: Number(match[2]) };
}

const uWS = loadNative();
const { host, port } = parseListen(process.argv.slice(2));
const app = uWS.App();

const common = {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_MESSAGE_BYTES,
  maxBackpressure: MAX_BACKLOG_BYTES,
};

// No `upgrade` or `open` handler: uWS completes the handshake in C++
// without calling into JavaScript, which is its fastest path.
app.ws("/echo", {
  ...common,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});

app.ws("/room/:name", {
  ...common,
  upgrade: (res, req, context) => {
    res.upgrade(
      { room: req.getParameter(0) },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  open: (ws) => {
    ws.subscribe(ws.getUserData().room);
  },
  message: (ws, message, isBinary) => {
    app.publish(ws.getUserData().room, message, isBinary);
  },
});

app.any("/*", (res) => {
  res.writeStatus("404 Not Found").end("not found\n");
});

app.listen(host, port, (listenSocket) => {
  if (!listenSocket) {
    console.error(`uws: could not listen on ${host}:${port}`);
    process.exit(1);
  }
  process.stdout.write(`uws listening on ws://${host}:${uWS.us_socket_local_port(listenSocket)}\n`);
});
