// A video call over the signaling server (protocol v1, docs/protocol.md): a full mesh of up
// to 6 people, with the protocol's negotiation convention (the newcomer
// offers; later renegotiations use perfect negotiation, the lower peer_id
// being polite), trickle ICE, ICE restarts, and resume after a dropped
// connection or a `goaway`. No dependencies, no build step. What the
// application's backend does shows too: verified identities, server
// messages, the room's topic, a name it gives us, and a removal (kicked,
// room closed, replaced by another tab), which is final.

const MAX_PEERS = 6;
const $ = (id) => document.getElementById(id);

const ERRORS = {
  room_full: "This room is full.",
  unauthorized: "This room needs an invitation: open the invite link you were sent.",
  invalid_room: "Room names are 1 to 64 letters, digits, '_', '.' or '-'.",
  unavailable: "The server is restarting. Reconnecting…",
  resume_failed: "Could not resume the session; joining again.",
  rate_limited: "Too many messages; some were dropped.",
  too_large: "A message was too large and was dropped.",
  bad_message: "The server did not understand a message.",
  not_joined: "Not in a room.",
  already_joined: "Already in a room.",
  unknown_peer: "That participant has left.",
};

// Close codes that end the membership for good (its resume token is dead):
// the page says why and does not reconnect.
const REMOVED = {
  4001: "You were removed from the room.",
  4002: "The room was closed.",
  4003: "You joined from another tab or device, so this one left the room.",
};

const state = {
  ws: null,
  room: "",
  roomMeta: {}, // the room's metadata, as the application's backend set it
  name: "",
  self: null, // our own peer object, once the server sent one (`updated`)
  peerId: null,
  resume: null,
  iceServers: [],
  peers: new Map(), // peer_id -> entry
  local: null,
  screen: null,
  muted: false,
  cameraOff: false,
  leaving: false,
  retry: 0,
  relayOnly: false,
  token: null, // the join token from the invite link; never put back in a URL
  log: [], // the last problems met, newest last (shown to tests on failure)
  notices: [], // messages from the application's backend, newest last
  removed: null, // the close code that removed us (4001-4003), once it has
};

function status(text) { $("status").textContent = text; }
function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.hidden = !text;
}
function problem(what, err) {
  console.warn(what, err);
  state.log.push(`${what}: ${err && err.message ? err.message : err}`);
  if (state.log.length > 50) state.log.shift();
}
function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}
function meta() { return { muted: state.muted, camera: !state.cameraOff, sharing: !!state.screen }; }

// ---------------------------------------------------------------- devices

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [["videoinput", $("camera")], ["audioinput", $("microphone")]]) {
    const current = select.value;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`;
      return o;
    }));
    if (current) select.value = current;
  }
}

async function openMedia() {
  const cam = $("camera").value, mic = $("microphone").value;
  const stream = await navigator.mediaDevices.getUserMedia({
    video: cam ? { deviceId: { exact: cam } } : true,
    audio: mic ? { deviceId: { exact: mic } } : true,
  });
  stream.getAudioTracks().forEach((t) => (t.enabled = !state.muted));
  stream.getVideoTracks().forEach((t) => (t.enabled = !state.cameraOff));
  return stream;
}

async function switchDevices() {
  if (!state.local) return;
  const next = await openMedia();
  for (const entry of state.peers.values()) {
    for (const sender of entry.pc.getSenders()) {
      const track = next.getTracks().find((t) => sender.track && t.kind === sender.track.kind);
      if (track && !(state.screen && track.kind === "video")) await sender.replaceTrack(track);
    }
  }
  state.local.getTracks().forEach((t) => t.stop());
  state.local = next;
  if (!state.screen) $("local").srcObject = next;
}

// ---------------------------------------------------------------- signaling

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  // The token goes in the join, never on the /ws URL, where proxies log it.
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  state.ws = ws;
  status("Connecting…");
  ws.onopen = () => {
    // The id tells a refused join from a refused `update` (both may be
    // `unauthorized`: a token's grants can forbid updates).
    const join = { type: "join", id: "join", room: state.room, meta: meta() };
    // Without a name of our own, the server names us after the token's `sub`.
    if (state.name) join.name = state.name;
    if (state.token) join.token = state.token;
    if (state.resume) join.resume = state.resume;
    ws.send(JSON.stringify(join));
  };
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    // One peer's messages are handled strictly in order (an offer's answer
    // is made before the next offer or candidate of that peer is looked at);
    // a slow negotiation with one peer never holds up another.
    const entry = msg.from && state.peers.get(msg.from);
    const run = () => handle(msg).catch((err) => problem(`${msg.type} from ${msg.from || "server"}`, err));
    if (entry) entry.inbox = entry.inbox.then(run);
    else run();
  };
  ws.onclose = (e) => {
    if (state.ws !== ws || state.leaving) return;
    if (REMOVED[e.code]) return removed(e.code);
    // Dropped: come back and resume; the others never see us leave.
    state.retry += 1;
    const wait = Math.min(200 * 2 ** (state.retry - 1), 5000);
    status(`Connection lost, reconnecting (attempt ${state.retry})…`);
    setTimeout(connect, wait);
  };
}

async function handle(msg) {
  switch (msg.type) {
    case "joined": return onJoined(msg);
    case "peer-joined": return addPeer(msg.peer, false);
    case "peer-updated": return updatePeer(msg.peer);
    case "peer-left": return removePeer(msg.peer_id);
    case "updated": return onUpdated(msg.peer);
    case "room-updated": if (msg.room === state.room) setRoomMeta(msg.meta); return;
    case "message":
      // Peers' messages have no use here; the backend's are shown.
      if (msg.from === "server") notice(msg.data);
      return;
    case "offer": return onOffer(msg);
    case "answer": return onAnswer(msg);
    case "candidate": return onCandidate(msg);
    case "goaway":
      status("Server restarting, moving to another…");
      setTimeout(() => { const ws = state.ws; state.ws = null; ws.close(); connect(); }, msg.retry_after_ms || 0);
      return;
    case "error":
      if (msg.code === "resume_failed") {
        // Too late to resume: start again as a new participant.
        state.resume = null;
        for (const id of [...state.peers.keys()]) removePeer(id);
        return state.ws.onopen();
      }
      if (msg.code === "unauthorized" && msg.ref !== "join") {
        // The invitation forbids this (an `update`: muting, camera, sharing
        // are not shown to the others); the call goes on.
        return showError("Your invitation does not let you change what the others see of your status.");
      }
      showError(msg.code === "unauthorized" && state.token
        ? "This invite link is invalid or has expired (or is for another room): ask for a new one."
        : ERRORS[msg.code] || msg.message);
      // Trying again would be refused again: stop, and do not reconnect.
      if (msg.code === "room_full" || msg.code === "unauthorized" || msg.code === "invalid_room") {
        leave(false);
        status(msg.code === "unauthorized" ? "Not admitted" : "Not in a room");
      }
      return;
  }
}

function onJoined(msg) {
  const resumed = state.peerId === msg.peer_id;
  state.peerId = msg.peer_id;
  state.resume = msg.resume;
  state.iceServers = msg.ice_servers || [];
  state.retry = 0;
  showError(state.relayOnly && !state.iceServers.some((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)))
    ? "Relay only was asked for, but this server offers no TURN relay: calls cannot connect."
    : "");
  inRoom();
  setRoomMeta(msg.room_meta || {});
  document.body.dataset.peerId = msg.peer_id;
  const listed = new Set(msg.peers.map((p) => p.peer_id));
  if (resumed) {
    // The list is the room now: drop who left meanwhile, add who came.
    for (const id of [...state.peers.keys()]) if (!listed.has(id)) removePeer(id);
    for (const p of msg.peers) {
      if (state.peers.has(p.peer_id)) updatePeer(p);
      else addPeer(p, true);
    }
    for (const entry of state.peers.values()) {
      if (["failed", "disconnected"].includes(entry.pc.iceConnectionState)) restartIce(entry);
    }
    return;
  }
  for (const p of msg.peers.slice(0, MAX_PEERS - 1)) addPeer(p, true);
}

function inRoom() {
  status(`In room “${state.room}” as ${state.name || "guest"}`);
}

// The backend renamed us (or changed our meta): the name we show, and send
// again should we have to join afresh, is the one it gave.
function onUpdated(peer) {
  state.self = peer;
  if (typeof peer.name === "string") state.name = peer.name;
  $("self-caption").textContent = state.name ? `You (${state.name})` : "You";
  inRoom();
}

function setRoomMeta(meta) {
  state.roomMeta = meta && typeof meta === "object" ? meta : {};
  const topic = typeof state.roomMeta.topic === "string" ? state.roomMeta.topic : "";
  $("topic").textContent = topic ? `Topic: ${topic}` : "";
  $("topic").hidden = !topic;
}

// A message from the application's backend: a string, or an object whose
// `text` (or `message`, `notice`) is one; anything else is shown as JSON.
function notice(data) {
  const text = typeof data === "string" ? data
    : ["text", "message", "notice"].map((k) => data && data[k]).find((v) => typeof v === "string")
      ?? JSON.stringify(data);
  state.notices.push(text);
  if (state.notices.length > 20) state.notices.shift();
  $("notice-list").replaceChildren(...state.notices.map((t) => {
    const li = document.createElement("li");
    li.textContent = t;
    return li;
  }));
  $("notices").hidden = false;
}

// The server ended our membership (close code 4001-4003): final, no
// reconnect (the resume token no longer works, and a new join would undo
// what the backend did, or fight the other tab).
function removed(code) {
  state.removed = code;
  leave(false);
  status("Not in a room");
  showError(REMOVED[code]);
}

// ---------------------------------------------------------------- peers

function addPeer(info, newcomerOffers) {
  if (state.peers.has(info.peer_id)) return updatePeer(info);
  if (state.peers.size >= MAX_PEERS - 1) return;
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: state.relayOnly ? "relay" : "all",
  });
  const entry = {
    info, pc,
    polite: state.peerId < info.peer_id,
    // The newcomer makes the first offer; members already present wait for it.
    mayOffer: newcomerOffers,
    makingOffer: false,
    ignoreOffer: false,
    early: [],
    tile: makeTile(info),
    last: null,
    restarts: 0,
    restartWait: 0, // ms before the next ICE restart while the link stays down
    retryTimer: null,
    inbox: Promise.resolve(), // this peer's offer/answer/candidate, in order
  };
  state.peers.set(info.peer_id, entry);
  const video = state.screen ? state.screen.getVideoTracks()[0] : null;
  for (const t of state.local.getTracks()) pc.addTrack(t.kind === "video" && video ? video : t, state.local);
  shareUpload();
  pc.onicecandidate = ({ candidate }) =>
    send({ type: "candidate", to: info.peer_id, candidate: candidate ? candidate.toJSON() : null });
  pc.ontrack = ({ streams }) => {
    const v = entry.tile.querySelector("video");
    if (streams[0] && v.srcObject !== streams[0]) v.srcObject = streams[0];
  };
  pc.onnegotiationneeded = async () => {
    if (!entry.mayOffer) return;
    try {
      entry.makingOffer = true;
      await pc.setLocalDescription();
      send({ type: "offer", to: info.peer_id, sdp: pc.localDescription.sdp });
    } catch (err) {
      problem(`offer to ${info.peer_id}`, err);
    } finally {
      entry.makingOffer = false;
    }
  };
  pc.onsignalingstatechange = () => { if (pc.signalingState === "stable") limitUpload(entry); };
  pc.oniceconnectionstatechange = () => watchLink(entry);
  pc.onconnectionstatechange = () => watchLink(entry);
  renderPresence();
}

// A link that fails, or stays disconnected, gets an ICE restart, then
// another after a growing wait for as long as it stays down: the first may
// run while the network (or the TURN server) is still away and gather nothing.
// Chromium may report the connection `failed` while `iceConnectionState`
// still says `disconnected`, so both states are watched.
const DISCONNECTED_GRACE = 4000;
const linkUp = (pc) => ["connected", "completed"].includes(pc.iceConnectionState) && pc.connectionState !== "failed";

function watchLink(entry) {
  const pc = entry.pc;
  if (linkUp(pc)) {
    clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
    entry.restartWait = 0;
  } else if (pc.iceConnectionState === "failed" || pc.connectionState === "failed") {
    restartIce(entry);
  } else if (pc.iceConnectionState === "disconnected" && !entry.retryTimer) {
    entry.retryTimer = setTimeout(() => restartIce(entry), DISCONNECTED_GRACE);
  }
  renderPresence();
}

function restartIce(entry) {
  if (!entry.mayOffer || entry.pc.signalingState === "closed" || linkUp(entry.pc)) return;
  entry.restarts += 1;
  entry.pc.restartIce();
  clearTimeout(entry.retryTimer);
  entry.restartWait = Math.min(Math.max(entry.restartWait * 2, 2000), 15000);
  entry.retryTimer = setTimeout(() => restartIce(entry), entry.restartWait);
  renderPresence();
}

// In a mesh each person sends one video stream per other person, so the
// upload and the encoders' work grow with the call. The video bitrate is
// shared out of one budget, and from three others on the camera is sent at
// half size (a shared screen never is: its text must stay readable).
const UPLOAD_BUDGET = 2_500_000; // bit/s for all video sent
const MIN_STREAM = 150_000;

function shareUpload() {
  for (const entry of state.peers.values()) limitUpload(entry);
}

function limitUpload(entry) {
  const n = Math.max(state.peers.size, 1);
  const sender = entry.pc.getSenders().find((s) => s.track && s.track.kind === "video");
  if (!sender || entry.pc.signalingState === "closed") return;
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length === 0) return;
  const maxBitrate = Math.max(MIN_STREAM, Math.floor(UPLOAD_BUDGET / n));
  const scale = n >= 3 && !state.screen ? 2 : 1;
  const e = params.encodings[0];
  if (e.maxBitrate === maxBitrate && (e.scaleResolutionDownBy || 1) === scale) return;
  e.maxBitrate = maxBitrate;
  e.scaleResolutionDownBy = scale;
  sender.setParameters(params).catch((err) => problem(`video limits for ${entry.info.peer_id}`, err));
}

function updatePeer(info) {
  const entry = state.peers.get(info.peer_id);
  if (!entry) return;
  entry.info = info;
  entry.tile.querySelector("figcaption").replaceChildren(...label(info));
  renderPresence();
}

function removePeer(id) {
  const entry = state.peers.get(id);
  if (!entry) return;
  clearTimeout(entry.retryTimer);
  entry.pc.close();
  entry.tile.remove();
  state.peers.delete(id);
  shareUpload();
  renderPresence();
}

async function onOffer({ from, sdp }) {
  const entry = state.peers.get(from);
  if (!entry) return;
  const pc = entry.pc;
  const collision = entry.makingOffer || pc.signalingState !== "stable";
  entry.ignoreOffer = !entry.polite && collision;
  if (entry.ignoreOffer) return;
  await pc.setRemoteDescription({ type: "offer", sdp }); // rolls back our offer if polite
  await flushEarly(entry);
  await pc.setLocalDescription();
  send({ type: "answer", to: from, sdp: pc.localDescription.sdp });
  entry.mayOffer = true; // negotiated once: renegotiation is open to both sides
}

async function onAnswer({ from, sdp }) {
  const entry = state.peers.get(from);
  if (!entry) return;
  await entry.pc.setRemoteDescription({ type: "answer", sdp });
  await flushEarly(entry);
}

async function onCandidate({ from, candidate }) {
  const entry = state.peers.get(from);
  if (!entry || !candidate) return;
  if (!entry.pc.remoteDescription) return void entry.early.push(candidate);
  try {
    await entry.pc.addIceCandidate(candidate);
  } catch (err) {
    if (!entry.ignoreOffer) problem(`candidate from ${from}`, err);
  }
}

async function flushEarly(entry) {
  for (const c of entry.early.splice(0)) {
    try { await entry.pc.addIceCandidate(c); } catch (err) { problem("early candidate", err); }
  }
}

// ---------------------------------------------------------------- view

function caption(info) {
  const m = info.meta || {};
  const marks = [m.muted ? "muted" : null, m.camera === false ? "camera off" : null, m.sharing ? "sharing" : null].filter(Boolean);
  return `${info.name || "guest"}${marks.length ? ` (${marks.join(", ")})` : ""}`;
}

// The identity the server verified (the invitation's `sub`), next to the
// name, which is only what the peer calls itself.
function badge(info) {
  if (typeof info.identity !== "string" || !info.identity) return null;
  const b = document.createElement("span");
  b.className = "verified";
  b.title = `Verified identity: ${info.identity}`;
  b.textContent = info.identity === info.name ? "verified" : `verified: ${info.identity}`;
  return b;
}

// A peer's caption and, when it has one, its verified identity.
function label(info) {
  const b = badge(info);
  return b ? [caption(info), " ", b] : [caption(info)];
}

function makeTile(info) {
  const fig = document.createElement("figure");
  fig.className = "tile";
  fig.dataset.peerId = info.peer_id;
  const v = document.createElement("video");
  v.autoplay = true;
  v.playsInline = true;
  v.setAttribute("aria-label", `Video of ${info.name || "guest"}`);
  const cap = document.createElement("figcaption");
  cap.replaceChildren(...label(info));
  fig.append(v, cap);
  $("tiles").append(fig);
  return fig;
}

function renderPresence() {
  $("presence").replaceChildren(...[...state.peers.values()].map(({ info, pc }) => {
    const li = document.createElement("li");
    li.dataset.peerId = info.peer_id;
    li.dataset.muted = String(!!(info.meta && info.meta.muted));
    li.dataset.connection = pc.connectionState;
    if (info.identity) li.dataset.identity = info.identity;
    const b = badge(info);
    li.append(caption(info), ...(b ? [" ", b] : []), `: ${pc.connectionState}`);
    return li;
  }));
}

async function collectStats() {
  const rows = [];
  for (const [id, entry] of state.peers) {
    const report = await entry.pc.getStats();
    let frames = 0, bytes = 0, rtt = null, path = "-";
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") { frames += s.framesDecoded || 0; bytes += s.bytesReceived || 0; }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        rtt = s.currentRoundTripTime;
        const local = byId.get(s.localCandidateId);
        if (local) path = local.candidateType;
      }
    });
    const now = performance.now();
    const kbps = entry.last ? Math.round(((bytes - entry.last.bytes) * 8) / (now - entry.last.at)) : 0;
    entry.last = { bytes, at: now };
    entry.stats = { framesDecoded: frames, kbps, rtt, path };
    rows.push([entry.info.name || id, `${kbps} kbit/s (${frames} frames)`, rtt == null ? "-" : `${Math.round(rtt * 1000)} ms`, path]);
  }
  $("stats").tBodies[0].replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
    return tr;
  }));
}

// ---------------------------------------------------------------- controls

function toggle(button, on, label) {
  button.setAttribute("aria-pressed", String(on));
  button.textContent = label;
}

$("mute").onclick = () => {
  state.muted = !state.muted;
  state.local.getAudioTracks().forEach((t) => (t.enabled = !state.muted));
  toggle($("mute"), state.muted, state.muted ? "Unmute" : "Mute");
  send({ type: "update", meta: meta() });
};

$("cam").onclick = () => {
  state.cameraOff = !state.cameraOff;
  state.local.getVideoTracks().forEach((t) => (t.enabled = !state.cameraOff));
  toggle($("cam"), state.cameraOff, state.cameraOff ? "Camera on" : "Camera off");
  send({ type: "update", meta: meta() });
};

async function setVideoTrack(track) {
  for (const entry of state.peers.values()) {
    const sender = entry.pc.getSenders().find((s) => s.track && s.track.kind === "video");
    if (sender) await sender.replaceTrack(track);
  }
}

$("share").onclick = async () => {
  if (state.screen) return stopSharing();
  try {
    state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (err) {
    return showError(`Screen sharing failed: ${err.message}`);
  }
  const track = state.screen.getVideoTracks()[0];
  track.onended = stopSharing;
  await setVideoTrack(track);
  shareUpload();
  $("local").srcObject = state.screen;
  toggle($("share"), true, "Stop sharing");
  send({ type: "update", meta: meta() });
};

async function stopSharing() {
  if (!state.screen) return;
  state.screen.getTracks().forEach((t) => t.stop());
  state.screen = null;
  await setVideoTrack(state.local.getVideoTracks()[0]);
  shareUpload();
  $("local").srcObject = state.local;
  toggle($("share"), false, "Share screen");
  send({ type: "update", meta: meta() });
}

$("copy").onclick = async () => {
  // A link without a token admits nobody to a secured room, and ours must
  // not be shared: it is this person's identity.
  if (state.token) {
    return status(`This room is secured: each guest needs an invite link of their own (the operator makes one with: signaling token --room ${state.room} --name NAME).`);
  }
  const url = `${location.origin}${location.pathname}?room=${encodeURIComponent(state.room)}`;
  try { await navigator.clipboard.writeText(url); status("Invite link copied"); } catch { status(url); }
};

function leave(sayBye = true) {
  state.leaving = true;
  if (sayBye) send({ type: "leave" });
  if (state.ws) state.ws.close();
  for (const id of [...state.peers.keys()]) removePeer(id);
  if (state.local) state.local.getTracks().forEach((t) => t.stop());
  state.local = null;
  state.peerId = state.resume = null;
  $("call").hidden = true;
  $("join").hidden = false;
  state.notices = [];
  $("notice-list").replaceChildren();
  $("notices").hidden = true;
  $("self-caption").textContent = "You";
  setRoomMeta({});
  status("Left the room");
}
$("leave").onclick = () => leave(true);

$("camera").onchange = () => switchDevices().catch((e) => showError(e.message));
$("microphone").onchange = () => switchDevices().catch((e) => showError(e.message));

$("join").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!$("join").reportValidity()) return;
  state.room = $("room").value;
  state.name = $("name").value.trim();
  state.relayOnly = $("relay").checked;
  state.leaving = false;
  state.removed = null;
  showError("");
  try {
    state.local = await openMedia();
  } catch (err) {
    return showError(`Camera or microphone unavailable: ${err.message}`);
  }
  await listDevices().catch(() => {});
  $("local").srcObject = state.local;
  const url = new URL(location.href);
  url.searchParams.set("room", state.room);
  if (state.relayOnly) url.searchParams.set("relay", "1");
  else url.searchParams.delete("relay");
  history.replaceState(history.state, "", url);
  $("join").hidden = true;
  $("call").hidden = false;
  connect();
});

// An invite link carries a join token: `?room=R#token=JWT` (a fragment never
// reaches a server or its logs) or `?token=JWT`. It is taken out of the
// address bar at once, so it is neither bookmarked, shared by copying the
// address nor sent on, and kept for this tab only (sessionStorage: a reload
// still works; it never leaves the browser).
function takeToken() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.slice(1));
  const token = hash.get("token") || url.searchParams.get("token");
  if (hash.has("token") || url.searchParams.has("token")) {
    if (hash.has("token")) {
      hash.delete("token");
      url.hash = hash.toString();
    }
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url);
  }
  try {
    if (token) sessionStorage.setItem("token", token);
    return token || sessionStorage.getItem("token");
  } catch {
    return token; // storage may be off: the token still serves this page
  }
}
state.token = takeToken();

// A join token's `sub` is the name its invitation was made out to.
function tokenName(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : "";
  } catch {
    return "";
  }
}

// The room in the URL makes a link an invitation.
const params = new URLSearchParams(location.search);
$("room").value = params.get("room") || "";
$("relay").checked = params.get("relay") === "1";
$("name").value = (state.token && tokenName(state.token)) || localStorage.getItem("name") || "";
$("name").addEventListener("change", () => localStorage.setItem("name", $("name").value));
listDevices().catch(() => {});
setInterval(() => { if (state.peers.size) collectStats(); }, 1000);

// For tests and the curious: the call's state, read-only by convention.
window.call = { state, collectStats, leave };
