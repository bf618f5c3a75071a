// A server-side disconnect while more publications go on than the server's
// history holds (3): on reconnect the SDK reports the recovery failed
// (wasRecovering, not recovered) and goes on from the current position.
"use strict";

const { api, bound, check, client, fail, once, publishApi, token } = require("./centrifuge_common");

const publish = (n) => publishApi("busy", { n });

async function main() {
  bound(25);
  const reader = client({ token: token("late"), minReconnectDelay: 1000, maxReconnectDelay: 1500 });
  reader.connect();
  const sub = reader.newSubscription("busy", { recoverable: true });
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  sub.subscribe();
  await sub.ready(5000);
  await publish(1);
  for (let i = 0; i < 50 && got.length < 1; i++) await new Promise((r) => setTimeout(r, 50));

  const away = once(reader, "connecting");
  const [status] = await api("POST", "/api/disconnect", { user: "late" });
  check(status === 200, `disconnect: ${status}`);
  await away;
  for (const n of [2, 3, 4, 5, 6]) await publish(n);

  const back = await once(sub, "subscribed", 10);
  check(back.wasRecovering === true && back.recovered === false, `resubscribed ${JSON.stringify(back)}`);
  check(back.streamPosition && back.streamPosition.offset === 6, `position ${JSON.stringify(back.streamPosition)}`);
  await publish(7);
  for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  check(got.join(",") === "1,7", `received ${got}`);
  reader.disconnect();
  console.log("ok the lost history was reported (recovered false)");
}

main().catch((e) => fail(e && e.stack ? e.stack : JSON.stringify(e)));
