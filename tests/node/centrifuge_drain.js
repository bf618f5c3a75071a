// A server drain: the SDK is closed with 3001 and the drain's hint
// ("reconnect in N s"), reconnects (to the server that took the port over)
// within the hinted window and subscribes again.
"use strict";

const { bound, check, client, fail, once, token } = require("./centrifuge_common");

async function main() {
  bound(25);
  const c = client({ token: token("drained") });
  c.connect();
  await c.ready(5000);
  const sub = c.newSubscription("d");
  sub.subscribe();
  await sub.ready(5000);
  console.error("connected"); // the test drains the server now
  const closed = await once(c, "connecting", 15);
  check(closed.code === 3001, `closed with ${JSON.stringify(closed)}`);
  const hint = /reconnect in (\d+) s/.exec(closed.reason);
  check(hint, `the reason gives no hint: ${closed.reason}`);
  const began = Date.now();
  await once(c, "connected", 10);
  await once(sub, "subscribed", 5);
  const took = Date.now() - began;
  check(took <= Number(hint[1]) * 1000 + 1000, `back after ${took} ms, hinted ${hint[1]} s`);
  c.disconnect();
  console.log(`ok reconnected ${took} ms after ${closed.code} ${closed.reason}`);
}

main().catch((e) => fail(e && e.stack ? e.stack : JSON.stringify(e)));
