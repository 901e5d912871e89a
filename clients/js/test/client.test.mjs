// Tests of the JavaScript client against a live `arq serve` (see server.mjs),
// with the npm `ws` package injected as the WebSocket implementation (node 20
// has no global WebSocket; the client itself has no dependencies).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { ArqonClient, ArqonError, frames, backoffDelay, reconnectHint, subjectMatches, tokenExpiry } from '../index.js';
import { Server, until } from './server.mjs';

const srv = new Server();
const clients = new Set();
const STEP = { timeout: 30000 };

function client(opts) {
  const c = new ArqonClient(Object.assign({ url: srv.wsURL, WebSocket: WebSocket, initialDelayMs: 100, maxDelayMs: 1000 }, opts));
  clients.add(c);
  return c;
}

function record(c) {
  const events = [];
  for (const e of ['connecting', 'connected', 'disconnected', 'closed']) c.on(e, (d) => events.push(Object.assign({ e: e }, d)));
  return events;
}

before(async () => {
  await srv.start();
}, { timeout: 330000 });

after(async () => {
  for (const c of clients) c.close();
  await srv.cleanup();
}, { timeout: 20000 });

test('helpers: backoff with full jitter, reconnect hints, subject matching, token expiry', () => {
  assert.equal(backoffDelay(0, 250, 30000, () => 0.999), 249);
  assert.equal(backoffDelay(3, 250, 30000, () => 0.5), 1000);
  assert.equal(backoffDelay(20, 250, 30000, () => 0.5), 15000); // capped
  assert.equal(backoffDelay(5, 250, 30000, () => 0), 0); // full jitter reaches 0
  assert.equal(reconnectHint('server shutting down'), -1);
  assert.equal(reconnectHint('overloaded; retry after 5s'), 5000);
  assert.equal(reconnectHint('retry-after=250ms'), 250);
  assert.ok(subjectMatches('chat.>', 'chat.a.b'));
  assert.ok(!subjectMatches('chat.>', 'chat'));
  assert.ok(subjectMatches('orders.*.created', 'orders.1.created'));
  assert.ok(!subjectMatches('orders.*', 'orders.1.created'));
  const tok = srv.mint('t1', 'u', '1h');
  const exp = tokenExpiry(tok);
  assert.ok(Math.abs(exp - (Date.now() + 3600e3)) < 10e3, 'exp read from the JWT');
  assert.equal(tokenExpiry('garbage'), 0);
  // the shared frame parser: strict for k6, lenient (unknown fields) for the client
  const newer = '{"op":"pong","id":4,"future":true}';
  assert.throws(() => frames.parse(newer), /unknown field/);
  assert.equal(frames.parse(newer, { lenient: true }).id, 4);
});

test('connect, state events, publish/subscribe with callbacks, async iterators and acks', STEP, async () => {
  const a = client({ token: srv.mint('acme', 'alice') });
  const ev = record(a);
  const welcome = await a.connect();
  assert.equal(welcome.user, 'alice');
  assert.equal(welcome.tenant, 'acme');
  assert.deepEqual(ev.map((x) => x.e), ['connecting', 'connected']);
  assert.equal(a.state, 'connected');

  const got = [];
  const sub = a.subscribe('chat.>', (m) => got.push(m));
  await sub.ready;
  const it = a.subscribe('chat.lobby');
  await it.ready;
  const iter = it[Symbol.asyncIterator]();

  await a.publish('chat.lobby', 'hello', { ack: true, headers: { 'trace-id': 't-1' } });
  await a.publish('chat.bin', new Uint8Array([0, 1, 2, 255]));
  await until(() => got.length === 2, 5000, 'two messages');
  assert.equal(got[0].subject, 'chat.lobby');
  assert.equal(got[0].data, 'hello');
  assert.equal(got[0].text, true);
  assert.equal(got[0].traceId, 't-1');
  assert.ok(got[0].tsMs > Date.now() - 60000);
  assert.deepEqual(Array.from(got[1].data), [0, 1, 2, 255]);
  assert.equal(got[1].text, false);
  const first = await iter.next();
  assert.equal(first.value.data, 'hello');

  // the ack promise rejects with the server's code
  await assert.rejects(a.publish('chat.*', 'x', { ack: true }), (e) => e instanceof ArqonError && e.code === 'VALIDATION_ERROR');
  // protocol ping
  const rtt = await a.ping();
  assert.ok(rtt >= 0 && rtt < 5000);

  // unsubscribe: the server subscription goes with the last local one
  await sub.unsubscribe();
  await iter.return();
  await a.publish('chat.lobby', 'after', { ack: true });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(got.length, 2);
  a.close();
  assert.equal(a.state, 'closed');
  assert.equal(ev[ev.length - 1].e, 'closed');
});

test('presence: members with paging, join and leave events, count', STEP, async () => {
  const a = client({ token: srv.mint('acme', 'ann') });
  const b = client({ token: srv.mint('acme', 'bob') });
  await a.connect();
  await b.connect();
  const joins = [];
  const leaves = [];
  const ra = a.subscribe('room.p1', { presence: true, info: { name: 'Ann' }, onJoin: (m) => joins.push(m), onLeave: (m, why) => leaves.push([m, why]) });
  await ra.ready;
  await until(() => ra.count === 1, 5000, 'ann sees herself');
  const rb = b.subscribe('room.p1', () => {}, { presence: true, info: { name: 'Bob' } });
  await rb.ready;
  await until(() => ra.count === 2 && rb.count === 2, 5000, 'both see two members');
  assert.ok(joins.some((m) => m.user === 'bob' && m.info.name === 'Bob'));
  const page = await a.presence('room.p1', { limit: 1 });
  assert.equal(page.members.length, 1);
  assert.equal(page.count, 2);
  assert.ok(page.cursor, 'a first page of one has a cursor');
  const all = await a.presenceAll('room.p1', { limit: 1 });
  assert.deepEqual(all.members.map((m) => m.user).sort(), ['ann', 'bob']);
  assert.deepEqual(await a.count('room.p1'), { count: 2, users: 2 });
  b.close();
  await until(() => leaves.length === 1, 5000, 'ann sees bob leave');
  assert.equal(leaves[0][0].user, 'bob');
  assert.equal(leaves[0][1], 'close');
  assert.equal(ra.count, 1);
  a.close();
});

test('a refused token (HTTP 401) is fatal: no reconnect', STEP, async () => {
  let calls = 0;
  const c = client({ token: () => (calls++, 'not.a.jwt') });
  const ev = record(c);
  await assert.rejects(c.connect(), (e) => e.code === 'AUTH' && /401/.test(e.message));
  assert.equal(c.state, 'closed');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(calls, 1, 'the token function is not called again');
  assert.deepEqual(ev.map((x) => x.e), ['connecting', 'disconnected', 'closed']);
  assert.equal(ev[1].fatal, true);
  assert.equal(ev[1].willReconnect, false);
});

test('a token that expires on an open connection: the token function is called again, then reconnect', STEP, async () => {
  const ttls = ['1s', '10m'];
  let calls = 0;
  const c = client({ token: () => srv.mint('acme', 'exp', ttls[Math.min(calls++, 1)]), tokenRefreshMs: 0 });
  const ev = record(c);
  await c.connect();
  const got = [];
  await c.subscribe('exp.x', (m) => got.push(m)).ready;
  // exp + 5 s leeway, checked once a second
  await until(() => ev.some((x) => x.e === 'disconnected'), 12000, 'the server closes at expiry');
  const d = ev.find((x) => x.e === 'disconnected');
  assert.equal(d.code, 1008);
  assert.match(d.reason, /token expired/);
  assert.equal(d.willReconnect, true);
  await until(() => c.state === 'connected', 5000, 'reconnected');
  assert.equal(calls, 2);
  await c.publish('exp.x', 'still here', { ack: true });
  await until(() => got.length === 1, 5000, 'resubscribed');
  // with a fixed string there is no fresh token: stop
  const s = client({ token: srv.mint('acme', 'exp2', '1s') });
  const sev = record(s);
  await s.connect();
  await until(() => s.state === 'closed', 12000, 'static token: closed');
  assert.equal(sev.find((x) => x.e === 'disconnected').fatal, true);
  c.close();
});

test('the token function is called again before exp and the client reconnects', STEP, async () => {
  let calls = 0;
  const c = client({ token: () => (calls++, srv.mint('acme', 'fresh', '40s')), tokenRefreshMs: 38500 });
  const ev = record(c);
  await c.connect();
  const got = [];
  await c.subscribe('fresh.x', (m) => got.push(m)).ready;
  await until(() => calls === 2 && c.state === 'connected', 8000, 'refresh reconnect');
  const d = ev.find((x) => x.e === 'disconnected');
  assert.equal(d.reason, 'token refresh');
  await until(async () => {
    await c.publish('fresh.x', 'x', { ack: true }).catch(() => {});
    return got.length > 0;
  }, 5000, 'resubscribed after refresh');
  c.close();
});

test('a dead connection (no pong) is dropped and reconnected', STEP, async () => {
  const c = client({ token: srv.mint('acme', 'dead'), pingIntervalMs: 200, pongTimeoutMs: 600, connectTimeoutMs: 1000 });
  const ev = record(c);
  await c.connect();
  srv.pause();
  try {
    await until(() => ev.some((x) => x.e === 'disconnected' && x.reason === 'ping timeout'), 5000, 'ping timeout');
  } finally {
    srv.resume();
  }
  await until(() => c.state === 'connected', 10000, 'reconnected after the server resumed');
  c.close();
});

test('server restart: close 1001 honoured, reconnect with jitter, resubscribe with presence', { timeout: 60000 }, async () => {
  const a = client({ token: () => srv.mint('acme', 'ra') });
  const b = client({ token: () => srv.mint('acme', 'rb') });
  const ev = record(a);
  await a.connect();
  await b.connect();
  const got = [];
  const room = a.subscribe('room.r', (m) => got.push(m.data), { presence: true, info: { name: 'A' } });
  const rb = b.subscribe('room.r', () => {}, { presence: true });
  await room.ready;
  await rb.ready;
  await until(() => room.count === 2, 5000, 'two members');

  await srv.stop(); // drain: close 1001 "server shutting down"
  await until(() => ev.some((x) => x.e === 'disconnected'), 5000, 'disconnected');
  const d = ev.find((x) => x.e === 'disconnected');
  assert.equal(d.code, 1001);
  assert.equal(d.willReconnect, true);
  assert.ok(d.delayMs >= 0 && d.delayMs < 1000, 'hint delay: random in [0, 1 s)');
  await new Promise((r) => setTimeout(r, 500));
  await srv.start();
  await until(() => a.state === 'connected' && b.state === 'connected', 20000, 'both reconnected');
  const again = ev.filter((x) => x.e === 'connected');
  assert.equal(again[again.length - 1].reconnect, true);
  // presence was rejoined and the member list refreshed
  await until(() => room.count === 2 && rb.count === 2, 5000, 'members again');
  await b.publish('room.r', 'after restart', { ack: true });
  await until(() => got.includes('after restart'), 5000, 'message after restart');
  a.close();
  b.close();
});
