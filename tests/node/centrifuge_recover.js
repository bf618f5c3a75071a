// A server-side disconnect (POST /api/disconnect) while publications go on:
// the SDK reconnects, resubscribes with its position, and gets every
// publication it missed exactly once, in order (the server's history holds
// 3, and 3 are missed).
"use strict";

const { api, bound, check, client, fail, once, publishApi, token } = require("./centrifuge_common");

const publish = (n) => publishApi("room", { n });

async function main() {
  bound(25);
  // Slow to come back, so the publications below happen while it is away.
  const reader = client({ token: token("reader"), minReconnectDelay: 1000, maxReconnectDelay: 1500 });
  reader.connect();
  const sub = reader.newSubscription("room", { recoverable: true });
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  const subscribed = [];
  sub.on("subscribed", (ctx) => subscribed.push(ctx));
  sub.subscribe();
  await sub.ready(5000);
  for (const n of [1, 2, 3]) await publish(n);
  for (let i = 0; i < 50 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 50));
  check(got.join(",") === "1,2,3", `before the kick: ${got}`);

  const away = once(reader, "connecting");
  const [status, answer] = await api("POST", "/api/disconnect", { user: "reader" });
  check(status === 200 && answer.closed === 1, `disconnect: ${status} ${JSON.stringify(answer)}`);
  const why = await away;
  check(why.code >= 3000 && why.code < 5000, `connecting after ${JSON.stringify(why)}`);
  for (const n of [4, 5, 6]) await publish(n);

  const back = await once(sub, "subscribed", 10);
  check(back.wasRecovering && back.recovered, `resubscribed ${JSON.stringify(back)}`);
  await publish(7);
  for (let i = 0; i < 50 && got.length < 7; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300)); // nothing comes twice
  check(got.join(",") === "1,2,3,4,5,6,7", `received ${got}`);
  check(subscribed.length === 2, `subscribed ${subscribed.length} times`);
  reader.disconnect();
  console.log(`ok recovered ${got.length} publications exactly once (closed ${why.code})`);
}

main().catch((e) => fail(e && e.stack ? e.stack : JSON.stringify(e)));
