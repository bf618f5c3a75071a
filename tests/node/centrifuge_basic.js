// The SDK against hubbub's /connection/websocket: connect with a token and
// with a getToken callback; subscribe; publish; join/leave; presence and
// presence stats; history (forward, reverse, position only); a channel the
// token does not allow; rpc answered (and refused) by the application
// through --proxy-rpc-url; and one hub: a `/ws`
// client and SDK clients see each other's publications.
"use strict";

const { bound, check, client, fail, once, token, wsClient } = require("./centrifuge_common");

async function main() {
  bound(20);
  const alice = client({ token: token("alice") });
  let asked = 0;
  const bob = client({
    getToken: async () => {
      asked += 1;
      return token("bob");
    },
  });
  const connected = once(alice, "connected");
  alice.connect();
  const ctx = await connected;
  check(typeof ctx.client === "string" && ctx.client.length > 0, `connect ctx ${JSON.stringify(ctx)}`);
  bob.connect();
  await bob.ready(5000);
  check(asked === 1, `getToken was called ${asked} times`);

  const aliceSub = alice.newSubscription("chat", { joinLeave: true });
  const joins = [];
  aliceSub.on("join", (j) => joins.push(j.info.user));
  aliceSub.subscribe();
  await aliceSub.ready(5000);
  const bobSub = bob.newSubscription("chat");
  const bobGot = [];
  bobSub.on("publication", (p) => bobGot.push(p));
  bobSub.subscribe();
  await bobSub.ready(5000);

  // One hub: a /ws client subscribes to the same channel.
  const wsGot = [];
  const carol = wsClient(token("carol"), (push) => push.push === "pub" && wsGot.push(push));
  const sub = await carol.call("subscribe", { channel: "chat" });
  check(!sub.error, `ws subscribe: ${JSON.stringify(sub)}`);

  await aliceSub.publish({ text: "hi" });
  await alice.publish("chat", { text: "again" });
  const pub = await carol.call("publish", { channel: "chat", data: { text: "from ws" } });
  check(!pub.error, `ws publish: ${JSON.stringify(pub)}`);
  for (let i = 0; i < 50 && (bobGot.length < 3 || wsGot.length < 3); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const texts = bobGot.map((p) => p.data.text).join(",");
  check(texts === "hi,again,from ws", `bob got ${texts}`);
  check(bobGot.map((p) => p.offset).join(",") === "1,2,3", `offsets ${bobGot.map((p) => p.offset)}`);
  check(wsGot.map((p) => p.data.text).join(",") === "hi,again,from ws", `ws got ${JSON.stringify(wsGot)}`);
  check(joins.includes("bob"), `alice saw joins of ${joins}`);

  const presence = await aliceSub.presence();
  const users = Object.values(presence.clients).map((c) => c.user).sort().join(",");
  check(users === "alice,bob,carol", `presence users ${users}`);
  const stats = await aliceSub.presenceStats();
  check(stats.numClients === 3 && stats.numUsers === 3, `presence stats ${JSON.stringify(stats)}`);

  const all = await aliceSub.history({ limit: 10 });
  check(all.publications.map((p) => p.data.text).join(",") === "hi,again,from ws", `history ${JSON.stringify(all)}`);
  check(all.offset === 3 && all.epoch.length > 0, `history position ${all.offset} ${all.epoch}`);
  const newest = await aliceSub.history({ limit: 2, reverse: true });
  check(newest.publications.map((p) => p.offset).join(",") === "3,2", `reverse ${JSON.stringify(newest)}`);
  const before = await aliceSub.history({ limit: 5, reverse: true, since: { offset: 3, epoch: all.epoch } });
  check(before.publications.map((p) => p.offset).join(",") === "2,1", `before 3 ${JSON.stringify(before)}`);
  const after = await aliceSub.history({ limit: 5, since: { offset: 1, epoch: all.epoch } });
  check(after.publications.map((p) => p.offset).join(",") === "2,3", `after 1 ${JSON.stringify(after)}`);
  const position = await aliceSub.history({ limit: 0 });
  check(position.publications.length === 0 && position.offset === 3, `position ${JSON.stringify(position)}`);

  // A channel the token does not allow.
  const dave = client({ token: token("dave", 3600, { channels: ["public:*"] }) });
  dave.connect();
  const secret = dave.newSubscription("secret");
  const refused = once(secret, "unsubscribed");
  secret.subscribe();
  const why = await refused;
  check(why.code === 103, `refused with ${JSON.stringify(why)}`);

  // RPC answered by the application (the test's --proxy-rpc-url backend).
  const sum = await alice.rpc("sum", [1, 2, 39]);
  check(sum.data.sum === 42 && sum.data.user === "alice", `rpc answer ${JSON.stringify(sum)}`);
  try {
    await alice.rpc("refuse", {});
    fail("a refused rpc answered");
  } catch (e) {
    check(e.code === 1001 && e.message === "not today", `rpc error ${JSON.stringify(e)}`);
  }

  bobSub.unsubscribe();
  const left = once(aliceSub, "leave");
  check((await left).info.user === "bob", "alice saw bob leave");
  for (const c of [alice, bob, dave]) c.disconnect();
  carol.socket.close();
  console.log("ok basic");
}

main().catch((e) => fail(e && e.stack ? e.stack : JSON.stringify(e)));
