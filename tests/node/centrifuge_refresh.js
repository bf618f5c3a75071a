// Tokens of 4 s, refreshed through getToken before they expire: the
// connection stays up well past the first token's life, and still receives.
"use strict";

const { api, bound, check, client, fail, token } = require("./centrifuge_common");

async function main() {
  bound(25);
  let asked = 0;
  const c = client({
    getToken: async () => {
      asked += 1;
      return token("short", 4);
    },
  });
  const ends = [];
  c.on("connecting", (ctx) => ends.push(ctx));
  c.on("disconnected", (ctx) => ends.push(ctx));
  c.connect();
  await c.ready(5000);
  const sub = c.newSubscription("ticks");
  const got = [];
  sub.on("publication", (p) => got.push(p.data));
  sub.subscribe();
  await sub.ready(5000);
  // A 4 s token's ttl is 2 or 3 s (whole seconds, refreshed a third to a
  // half before exp): by 10.5 s the SDK has asked at least 4 times.
  await new Promise((r) => setTimeout(r, 10500));
  check(ends.length === 1, `the connection ended: ${JSON.stringify(ends.slice(1))}`); // the first is connect()
  check(asked >= 4, `getToken asked ${asked} times in 10.5 s of 4 s tokens`);
  const [status] = await api("POST", "/api/publish", { channel: "ticks", data: "still here" });
  check(status === 200, `publish ${status}`);
  for (let i = 0; i < 50 && got.length < 1; i++) await new Promise((r) => setTimeout(r, 50));
  check(got[0] === "still here", `received ${got}`);
  c.disconnect();
  console.log(`ok refreshed ${asked - 1} times without a disconnect`);
}

main().catch((e) => fail(e && e.stack ? e.stack : JSON.stringify(e)));
