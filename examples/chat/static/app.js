// The chat page: centrifuge-js against hubbub's /connection/websocket, and
// the backend (server.py) for tokens, older history and private messages.
//
// Every message carries the backend's SQLite `id` (the publish hook sets
// it), so each view keeps the ids it shows: the newest page (channel
// history), older pages (SQLite), recovered publications after a reconnect
// and mailbox messages can overlap, and each message is still shown once,
// in id order. Everything from the network is rendered with textContent.
"use strict";

const PAGE = 30;
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  token: null,
  config: null,
  client: null,
  views: new Map(), // "room:general" or "dm:ann:bob" -> view
  current: null,
  presence: new Map(), // room channel -> Set of users
  mailbox: null,
  subscribed: new Map(), // channel -> [wasRecovering, recovered] of each subscribe, for tests
};

function noteSubscribed(channel, ctx) {
  if (!state.subscribed.has(channel)) state.subscribed.set(channel, []);
  state.subscribed.get(channel).push([ctx.wasRecovering, ctx.recovered]);
}

// ---- backend calls --------------------------------------------------------

async function call(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const answer = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
    const json = await answer.json().catch(() => ({}));
    if (answer.status === 401 && state.me && attempt === 0) {
      await getToken(); // expired: one fresh token, one retry
      continue;
    }
    if (!answer.ok) throw new Error(json.error || `HTTP ${answer.status}`);
    return json;
  }
}

async function getToken() {
  const headers = { "Content-Type": "application/json" };
  const answer = await fetch("/api/token", { method: "POST", headers, body: JSON.stringify({ user: state.me }) });
  const json = await answer.json();
  if (!answer.ok) throw new Error(json.error || `HTTP ${answer.status}`);
  state.token = json.token;
  return json.token;
}

// ---- views and messages ---------------------------------------------------

function isMessage(m) {
  return m && Number.isSafeInteger(m.id) && typeof m.user === "string" && typeof m.text === "string" &&
    typeof m.room === "string" && Number.isFinite(m.time) && m.time > 0 && m.time < 1e11;
}

function dmPeer(key) {
  const [, a, b] = key.split(":");
  return a === state.me ? b : a;
}

function viewFor(key) {
  let view = state.views.get(key);
  if (view) return view;
  const pane = document.createElement("div");
  pane.className = "messages";
  pane.dataset.view = key;
  pane.hidden = true;
  const top = document.createElement("div");
  top.className = "history-top";
  top.textContent = "Scroll up for older messages";
  pane.append(top);
  $("panes").append(pane);
  view = { key, pane, top, ids: new Set(), oldest: null, newest: null, done: false, loading: false, unread: 0, paged: false };
  pane.addEventListener("scroll", () => pane.scrollTop < 80 && loadOlder(view));
  state.views.set(key, view);
  const item = document.createElement("li");
  item.dataset.view = key;
  const label = document.createElement("span");
  label.className = "label";
  if (key.startsWith("room:")) {
    label.textContent = `# ${key.slice(5)}`;
    $("rooms").append(item);
  } else {
    label.append(avatar(dmPeer(key)), document.createTextNode(dmPeer(key)));
    $("dms").querySelector(".hint")?.remove();
    $("dms").append(item);
  }
  const badge = document.createElement("span");
  badge.className = "badge";
  item.append(label, badge);
  item.addEventListener("click", () => show(key));
  view.item = item;
  view.badge = badge;
  return view;
}

function avatar(name) {
  const el = document.createElement("span");
  el.className = "avatar";
  el.textContent = (name[0] || "?").toUpperCase();
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  el.style.background = `hsl(${hash % 360} 55% 48%)`;
  return el;
}

// Adds one message to its view, once, in id order. `fresh`: it just
// happened (counts as unread when not looked at).
function addMessage(m, fresh) {
  if (!isMessage(m)) return;
  const key = m.room.startsWith("dm:") ? m.room : `room:${m.room}`;
  if (key.startsWith("dm:") && !key.split(":").slice(1).includes(state.me)) return;
  if (key.startsWith("room:") && !state.config.rooms.includes(m.room)) return;
  const view = viewFor(key);
  if (view.ids.has(m.id)) return;
  view.ids.add(m.id);
  const pane = view.pane;
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 60;
  const el = render(m);
  let after = pane.lastElementChild;
  while (after && after !== view.top && Number(after.dataset.id) > m.id) after = after.previousElementSibling;
  after.after(el);
  group(el);
  group(el.nextElementSibling);
  view.oldest = view.oldest === null ? m.id : Math.min(view.oldest, m.id);
  view.newest = view.newest === null ? m.id : Math.max(view.newest, m.id);
  if (m.id === view.newest && (atBottom || m.user === state.me)) pane.scrollTop = pane.scrollHeight;
  if (fresh && m.user !== state.me && (state.current !== view || document.hidden)) {
    view.unread++;
    view.badge.textContent = String(view.unread);
  }
}

function render(m) {
  const el = document.createElement("div");
  el.className = m.user === state.me ? "msg mine" : "msg";
  el.dataset.id = String(m.id);
  el.dataset.user = m.user;
  el.dataset.time = String(m.time);
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = m.user;
  const time = document.createElement("time");
  const when = new Date(m.time * 1000);
  time.dateTime = when.toISOString();
  const clock = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const today = when.toDateString() === new Date().toDateString();
  time.textContent = today ? clock : `${when.toLocaleDateString([], { month: "short", day: "numeric" })}, ${clock}`;
  meta.append(author, time);
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = m.text;
  bubble.append(text);
  el.append(avatar(m.user), meta, bubble);
  return el;
}

// A message right after one of the same author (within 5 minutes) hides
// its avatar and name, as chats do.
function group(el) {
  if (!el || !el.classList.contains("msg")) return;
  const prev = el.previousElementSibling;
  const same = prev && prev.classList.contains("msg") && prev.dataset.user === el.dataset.user &&
    Number(el.dataset.time) - Number(prev.dataset.time) < 300;
  el.classList.toggle("cont", Boolean(same));
}

// Older messages from SQLite, when the user scrolls to the top.
async function loadOlder(view) {
  if (view.loading || view.done) return;
  view.loading = true;
  view.paged = true;
  try {
    const room = view.key.startsWith("room:") ? view.key.slice(5) : view.key;
    const before = view.oldest === null ? "" : `&before=${view.oldest}`;
    const page = await call("GET", `/api/history?room=${encodeURIComponent(room)}&limit=${PAGE}${before}`);
    const pane = view.pane;
    const height = pane.scrollHeight;
    for (const m of page.messages) addMessage(m, false);
    pane.scrollTop += pane.scrollHeight - height;
    if (page.messages.length < PAGE) {
      view.done = true;
      view.top.textContent = view.key.startsWith("room:") ? `This is the start of # ${room}.` :
        `This is the start of your conversation with ${dmPeer(view.key)}.`;
    }
    view.loading = false;
    if (unfilled(view)) loadOlder(view);
  } catch (e) {
    view.loading = false;
    view.top.textContent = `Could not load older messages: ${e.message}`;
  }
}

// A pane whose messages do not fill it gives nothing to scroll up with.
function unfilled(view) {
  return !view.done && !view.pane.hidden && view.pane.scrollHeight <= view.pane.clientHeight;
}

// What a reconnect could not recover (hubbub's history was gone): the
// messages after the newest one shown, from SQLite.
async function fillGap(view) {
  const room = view.key.startsWith("room:") ? view.key.slice(5) : view.key;
  for (let pages = 0; pages < 20; pages++) {
    const after = view.newest || 0;
    const page = await call("GET", `/api/history?room=${encodeURIComponent(room)}&limit=100&after=${after}`);
    for (const m of page.messages) addMessage(m, true);
    if (page.messages.length < 100) return;
  }
}

function show(key) {
  const view = viewFor(key);
  for (const v of state.views.values()) {
    v.pane.hidden = v !== view;
    v.item.classList.toggle("active", v === view);
  }
  state.current = view;
  view.unread = 0;
  view.badge.textContent = "";
  if (key.startsWith("room:")) {
    $("title").textContent = `# ${key.slice(5)}`;
  } else {
    $("title").replaceChildren(avatar(dmPeer(key)), document.createTextNode(dmPeer(key)));
  }
  // A conversation's first page; a room's comes when it is subscribed.
  if (key.startsWith("dm:") ? !view.paged || unfilled(view) : view.paged && unfilled(view)) loadOlder(view);
  renderSubtitle();
  view.pane.scrollTop = view.pane.scrollHeight;
  $("text").focus();
}

// ---- presence ---------------------------------------------------------------

function online() {
  const users = new Set();
  for (const set of state.presence.values()) for (const u of set) users.add(u);
  return [...users].sort();
}

function renderPresence() {
  const users = online();
  $("online-count").textContent = String(users.length);
  const items = users.map((user) => {
    const li = document.createElement("li");
    li.dataset.user = user;
    li.append(avatar(user), document.createTextNode(user === state.me ? `${user} (you)` : user));
    if (user !== state.me) li.addEventListener("click", () => show(dmKey(user)));
    else li.classList.add("self");
    return li;
  });
  $("online").replaceChildren(...items);
  renderSubtitle();
}

function renderSubtitle() {
  const view = state.current;
  if (!view) return;
  if (view.key.startsWith("room:")) {
    const n = state.presence.get(view.key)?.size || 0;
    $("subtitle").textContent = `${n} online`;
  } else {
    const peer = dmPeer(view.key);
    $("subtitle").textContent = online().includes(peer) ? "online" : "offline: gets your messages when back";
  }
}

function dmKey(user) {
  return `dm:${[state.me, user].sort().join(":")}`;
}

async function refreshPresence(sub) {
  try {
    const answer = await sub.presence();
    const users = new Set(Object.values(answer.clients).map((c) => c.user).filter(Boolean));
    state.presence.set(sub.channel, users);
    renderPresence();
  } catch (e) {
    console.warn("presence", sub.channel, e);
  }
}

// ---- connection -------------------------------------------------------------

function setConnection(status) {
  document.body.dataset.conn = status;
  if (status === "connected") state.wasConnected = true;
  $("banner").hidden = status === "connected";
  const trying = state.wasConnected ? "Reconnecting…" : "Connecting…";
  $("banner").textContent = status === "connecting" ? trying : "Disconnected: reload the page to try again";
  $("conn-dot").className = `dot ${status}`;
}

function subscribeRoom(room) {
  const channel = `room:${room}`;
  const view = viewFor(channel);
  const sub = state.client.newSubscription(channel, { recoverable: true, positioned: true, joinLeave: true });
  view.sub = sub;
  sub.on("publication", (ctx) => addMessage(ctx.data, true));
  sub.on("join", (ctx) => {
    state.presence.get(channel)?.add(ctx.info.user);
    renderPresence();
  });
  sub.on("leave", (ctx) => {
    state.presence.get(channel)?.delete(ctx.info.user);
    renderPresence();
  });
  sub.on("subscribed", async (ctx) => {
    noteSubscribed(channel, ctx);
    refreshPresence(sub);
    if (!ctx.wasRecovering) {
      // The newest page from hubbub's channel history, then SQLite for the rest of the screen.
      const page = await sub.history({ limit: PAGE, reverse: true }).catch(() => ({ publications: [] }));
      for (const p of page.publications) addMessage(p.data, false);
      if (page.publications.length < PAGE) loadOlder(view);
    } else if (!ctx.recovered) {
      fillGap(view).catch((e) => console.warn("gap", channel, e));
    }
    // recovered: the SDK hands the missed publications to "publication".
  });
  sub.subscribe();
}

// Private messages: live as `message` pushes, and after a time away from
// the user's mailbox channel. The position read last is kept per user in
// localStorage, so a new page load gets what came while it was closed.
//
// Only the backend's messages are shown. Any client can `send` a user
// anything on hubbub's `/ws`, but hubbub names the sender of such a message
// (live: data `{from: USER, data}`; kept in the mailbox: `{from, data}`),
// while the server API's, which only the backend can call, come as given
// live and with `from: null` in the mailbox.
function subscribeMailbox() {
  const channel = `#mailbox:${state.me}`;
  const stored = `hubbub-chat:mailbox:${state.me}`;
  const read = () => {
    try {
      const p = JSON.parse(localStorage.getItem(stored) || "null");
      return p && Number.isSafeInteger(p.offset) && typeof p.epoch === "string" ? p : null;
    } catch (e) {
      return null; // not ours, or damaged: start from the mailbox's history
    }
  };
  const since = read();
  let epoch = since && since.epoch;
  const remember = (offset) => {
    const last = read();
    if (!epoch || (last && last.epoch === epoch && last.offset >= offset)) return;
    localStorage.setItem(stored, JSON.stringify({ offset, epoch }));
  };
  // A kept mailbox entry is {from, data}; the live push is the data.
  const kept = (d) => (d && typeof d === "object" && d.from === null ? d.data : null);
  const sub = state.client.newSubscription(channel, { recoverable: true, since });
  state.mailbox = sub;
  sub.on("publication", (ctx) => {
    addMessage(kept(ctx.data), true);
    remember(ctx.offset);
  });
  sub.on("subscribed", async (ctx) => {
    noteSubscribed(channel, ctx);
    epoch = ctx.streamPosition && ctx.streamPosition.epoch;
    if (ctx.wasRecovering && ctx.recovered) return;
    // First visit, or the position is gone: read what the mailbox keeps.
    const page = await sub.history({ limit: 100 }).catch(() => ({ publications: [] }));
    for (const p of page.publications) addMessage(kept(p.data), true);
    if (ctx.streamPosition) remember(ctx.streamPosition.offset);
  });
  state.client.on("message", async (ctx) => {
    const m = ctx.data;
    // Another user's message names its sender: not the backend's.
    if (!m || typeof m !== "object" || "from" in m) return;
    if (!Number.isSafeInteger(m.id) || typeof m.room !== "string" || !m.room.startsWith("dm:")) return;
    addMessage(m, true);
    // A live message has no offset: ask for the mailbox's position.
    const position = await sub.history({ limit: 0 }).catch(() => null);
    if (position && position.epoch === epoch) remember(position.offset);
  });
  sub.subscribe();
}

async function start(name) {
  state.me = name;
  state.config = await (await fetch("/api/config")).json();
  await getToken();
  localStorage.setItem("hubbub-chat:name", name);
  $("login").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = name;
  $("me-avatar").replaceWith(avatar(name));
  $("text").maxLength = state.config.max_text;
  // `?reconnect_ms=N` sets the first reconnect's delay (tests/chat.rs uses it).
  const first = Number(new URLSearchParams(location.search).get("reconnect_ms")) || 300;
  const client = new Centrifuge(state.config.ws, {
    getToken,
    minReconnectDelay: Math.min(Math.max(first, 100), 5000),
    maxReconnectDelay: 5000,
  });
  state.client = client;
  client.on("connecting", () => setConnection("connecting"));
  client.on("connected", () => setConnection("connected"));
  client.on("disconnected", () => setConnection("disconnected"));
  for (const room of state.config.rooms) subscribeRoom(room);
  subscribeMailbox();
  show(`room:${state.config.rooms[0]}`);
  client.connect();
}

async function send(text) {
  const view = state.current;
  if (view.key.startsWith("room:")) {
    await view.sub.publish({ text }); // the hook stores it; it comes back as a publication
  } else {
    const m = await call("POST", "/api/private", { to: dmPeer(view.key), text });
    addMessage(m, false);
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  start($("name").value.trim()).catch((err) => {
    state.me = null;
    $("login-error").textContent = err.message;
  });
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  $("send-error").textContent = "";
  input.value = "";
  send(text).catch((err) => {
    input.value = input.value || text; // give it back to edit
    $("send-error").textContent = `Not sent: ${err.message || JSON.stringify(err)}`;
  });
});

document.addEventListener("visibilitychange", () => {
  const view = state.current;
  if (document.hidden || !view) return;
  view.unread = 0; // seen now
  view.badge.textContent = "";
});

$("name").value = localStorage.getItem("hubbub-chat:name") || "";

// What the page shows, for tests and the console.
window.chat = {
  texts: (key) => [...(state.views.get(key)?.pane.querySelectorAll(".msg .text") || [])].map((e) => e.textContent),
  online: () => online().join(","),
  current: () => state.current && state.current.key,
  subscription: (key) => state.views.get(key)?.sub,
  subscribed: (channel) => state.subscribed.get(channel) || [],
  show,
};
