// The ArqonBus demo page: pick a name and a room, see who is present, chat.
// It uses the JavaScript client exactly as an application would; the token
// comes from GET /demo/token (dev default on loopback only).
import { ArqonClient } from '/demo/client/index.js';

const $ = (id) => document.getElementById(id);
const state = { client: null, room: null, sub: null, sent: 0, received: 0, lat: [], me: '' };

function line(cls, who, text, extra) {
  const li = document.createElement('li');
  li.className = cls;
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = who;
    li.appendChild(b);
  }
  li.appendChild(document.createTextNode(text));
  if (extra) {
    const s = document.createElement('span');
    s.className = 'lat';
    s.textContent = extra;
    li.appendChild(s);
  }
  const log = $('log');
  log.appendChild(li);
  while (log.children.length > 500) log.removeChild(log.firstChild);
  log.scrollTop = log.scrollHeight;
}

function setStatus(s, text) {
  const el = $('status');
  el.className = 'status ' + s;
  el.textContent = text;
  el.dataset.state = s;
}

function renderMembers(members) {
  const ul = $('members');
  ul.textContent = '';
  members.slice().sort((a, b) => a.joined_at - b.joined_at).forEach((m) => {
    const li = document.createElement('li');
    li.dataset.user = m.user;
    li.textContent = (m.info && m.info.name) || m.user;
    const s = document.createElement('span');
    s.className = 'sess';
    s.textContent = ' ' + m.session.slice(-6);
    li.appendChild(s);
    ul.appendChild(li);
  });
  $('count').textContent = String(members.length);
}

function stats() {
  $('sent').textContent = String(state.sent);
  $('received').textContent = String(state.received);
  if (state.lat.length) {
    const sorted = state.lat.slice().sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)];
    $('latency').textContent = 'last ' + state.lat[state.lat.length - 1].toFixed(1) + ' ms, p50 ' + p50.toFixed(1) + ' ms';
  }
  if (state.client) $('reconnects').textContent = String(state.client.stats.reconnects);
}

async function token() {
  // ?token=... (e.g. from `arq token --tenant demo --user NAME`) when the
  // node has no dev token endpoint (server.demo = true with a real secret)
  const given = new URLSearchParams(location.search).get('token');
  if (given) return given;
  const res = await fetch('/demo/token?user=' + encodeURIComponent(state.me), { cache: 'no-store' });
  if (!res.ok) throw new Error('token: HTTP ' + res.status + ' ' + (await res.text()));
  return (await res.json()).token;
}

function joined(on) {
  $('name').disabled = on;
  $('room').disabled = on;
  $('joinBtn').disabled = on;
  $('leaveBtn').disabled = !on;
  $('text').disabled = !on;
  $('sendBtn').disabled = !on;
}

async function join(name, room) {
  state.me = name;
  state.room = 'demo.room.' + room;
  const c = new ArqonClient({ url: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host, token: token });
  state.client = c;
  window.arqon = c; // for the console (and the browser test)
  c.on('connecting', ({ attempt }) => setStatus('connecting', attempt ? 'reconnecting (attempt ' + (attempt + 1) + ')' : 'connecting'));
  c.on('connected', ({ welcome, reconnect }) => {
    setStatus('connected', 'connected as ' + welcome.user);
    $('node').textContent = welcome.node_id;
    if (reconnect) line('sys', '', 'reconnected');
  });
  c.on('disconnected', ({ code, reason, willReconnect, delayMs }) => {
    setStatus(willReconnect ? 'disconnected' : 'closed', 'disconnected (' + code + (reason ? ' ' + reason : '') + ')' +
      (willReconnect ? ', retry in ' + delayMs + ' ms' : ''));
    line('sys', '', 'disconnected: ' + code + ' ' + (reason || ''));
  });
  c.on('closed', ({ fatal, reason }) => {
    if (fatal) line('sys', '', 'stopped: ' + reason);
    joined(false);
  });
  c.on('error', (e) => console.warn('arqon:', e));
  state.sub = c.subscribe(state.room, onMessage, {
    presence: true,
    info: { name: name },
    onJoin: (m) => line('sys join', '', ((m.info && m.info.name) || m.user) + ' joined'),
    onLeave: (m, why) => line('sys leave', '', ((m.info && m.info.name) || m.user) + ' left (' + why + ')'),
    onMembers: renderMembers,
  });
  joined(true);
  try {
    await c.connect();
  } catch (e) {
    line('sys', '', 'cannot connect: ' + e.message);
    joined(false);
  }
}

function onMessage(m) {
  state.received++;
  let body;
  try {
    body = JSON.parse(m.data);
  } catch {
    body = { name: '?', text: String(m.data) };
  }
  const mine = body.session === (state.client.welcome && state.client.welcome.session_id);
  let extra = '';
  if (mine && typeof body.sent === 'number') {
    const l = performance.timeOrigin + performance.now() - body.sent;
    state.lat.push(l);
    if (state.lat.length > 200) state.lat.shift();
    extra = l.toFixed(1) + ' ms';
  }
  line(mine ? 'msg me' : 'msg', body.name || '?', String(body.text), extra);
  stats();
}

$('join').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('name').value.trim(), $('room').value.trim());
});

$('leaveBtn').addEventListener('click', () => {
  if (state.client) state.client.close();
  renderMembers([]);
  setStatus('idle', 'not connected');
  joined(false);
});

$('send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text || !state.client) return;
  const c = state.client;
  const body = { name: state.me, text: text, session: c.welcome && c.welcome.session_id, sent: performance.timeOrigin + performance.now() };
  try {
    await c.publish(state.room, JSON.stringify(body), { ack: true });
    state.sent++;
    $('text').value = '';
  } catch (e) {
    line('sys', '', 'not sent: ' + (e.code || '') + ' ' + e.message);
  }
  stats();
});

setInterval(async () => {
  const c = state.client;
  if (!c || c.state !== 'connected') return;
  try {
    $('rtt').textContent = (await c.ping()).toFixed(1) + ' ms';
  } catch {
    // reconnecting
  }
  stats();
}, 2000);

const params = new URLSearchParams(location.search);
$('name').value = params.get('name') || 'user' + Math.floor(Math.random() * 1000);
if (params.get('room')) $('room').value = params.get('room');
if (params.get('autojoin')) join($('name').value, $('room').value);
