// Runs each k6 scenario's VU code under node: k6/ws is replaced by the
// in-process simulator of k6/tools/k6-sim.mjs (a synchronous socket event
// loop in front of a small model of the gateway's JSON protocol), k6 and
// k6/metrics by the recording stand-ins of k6/tools/k6-stub-hooks.mjs. This
// catches what a syntax check cannot (a ReferenceError in a handler, a
// metric fed NaN, a session that never closes, a loss counter that counts
// wrong) and shows that the scripts' failure counters fire on drift, loss
// and refused upgrades. Durations are shrunk through the scripts' own env.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { FakeBus } from '../tools/k6-sim.mjs';

register(new URL('../tools/k6-stub-hooks.mjs', import.meta.url));

const K6_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const STEP = { timeout: 20000 };
const TOKEN = 'x.y.z';

let loads = 0;
async function load(script, env) {
  globalThis.__ENV = Object.assign({ ARQ_TOKEN: TOKEN }, env);
  globalThis.__VU = 1;
  globalThis.__ITER = 0;
  globalThis.__k6stub = { metrics: {}, checks: [], samples: {} };
  const mod = await import(pathToFileURL(join(K6_DIR, script)).href + '?sim=' + ++loads);
  const st = globalThis.__k6stub;
  st.samples = {}; // count what the VU code adds, not init
  st.checks = [];
  return mod;
}

const samples = (name) => globalThis.__k6stub.samples[name] || [];
const sum = (name) => samples(name).reduce((a, b) => a + b, 0);
function checksPassed() {
  const failed = globalThis.__k6stub.checks.filter(([, ok]) => !ok).map(([n]) => n);
  assert.deepEqual(failed, [], 'failed checks');
  return globalThis.__k6stub.checks.length;
}
function assertTimes(name, min) {
  const v = samples(name);
  assert.ok(v.length >= min, `${name}: ${v.length} samples, want >= ${min}`);
  for (const x of v) assert.ok(Number.isFinite(x) && x >= 0 && x < 5000, `${name} sample ${x}`);
}

test('connect.js: a session welcomes, subscribes, pings and closes cleanly', STEP, async () => {
  const m = await load('connect.js', { RAMP: '0s', HOLD: '1s', SESSION: '1s', PING_INTERVAL: '100ms' });
  globalThis.__k6sim = new FakeBus();
  m.connect(m.setup());
  assert.ok(checksPassed() >= 3);
  assertTimes('arq_welcome_ms', 1);
  assertTimes('arq_sub_ack_ms', 1);
  assertTimes('arq_pong_ms', 5);
  assert.equal(sum('arq_bad_frames'), 0);
  assert.equal(sum('arq_unexpected_close'), 0);
});

test('connect.js: a drifted server frame is counted in arq_bad_frames', STEP, async () => {
  const m = await load('connect.js', { RAMP: '0s', HOLD: '1s', SESSION: '1s', PING_INTERVAL: '100ms' });
  globalThis.__k6sim = new FakeBus({ corrupt: (f) => (f.op === 'pong' ? Object.assign({}, f, { rtt: 1 }) : f) });
  m.connect(m.setup());
  assert.ok(sum('arq_bad_frames') >= 5, `bad frames ${sum('arq_bad_frames')}`);
  assert.equal(samples('arq_pong_ms').length, 0);
});

const FANOUT = { SUBS: '1', RATE: '200', DURATION: '300ms', WARMUP: '0s', DRAIN: '100ms', TICK: '10ms', ACK_EVERY: '5', SIZE: '64' };

test('fanout.js: publisher then subscriber: every message delivered, in order, end marker seen', STEP, async () => {
  const m = await load('fanout.js', FANOUT);
  globalThis.__k6sim = new FakeBus({ retain: true }); // replay the publisher's stream to the later subscriber
  const data = m.setup();
  m.publisher(data);
  m.subscriber(data);
  checksPassed();
  const published = sum('arq_msgs_published');
  assert.ok(published >= 30, `published ${published}`);
  assert.equal(sum('arq_msgs_delivered'), published);
  assertTimes('arq_delivery_ms', published);
  assertTimes('arq_pub_ack_ms', Math.floor(published / 5));
  assertTimes('arq_sub_ack_ms', 1);
  for (const n of ['arq_msgs_lost', 'arq_msgs_reordered', 'arq_fanout_incomplete', 'arq_bad_frames']) assert.equal(sum(n), 0, n);
});

test('fanout.js: a dropped message is counted in arq_msgs_lost', STEP, async () => {
  const m = await load('fanout.js', FANOUT);
  let n = 0;
  globalThis.__k6sim = new FakeBus({ retain: true, corrupt: (f) => (f.op === 'msg' && ++n === 7 ? null : f) });
  const data = m.setup();
  m.publisher(data);
  m.subscriber(data);
  assert.equal(sum('arq_msgs_lost'), 1);
  assert.equal(sum('arq_fanout_incomplete'), 0);
});

test('soak.js: mixed session (text, binary + trace-id, acks, pings, resub) without loss or bad frames', STEP, async () => {
  const m = await load('soak.js', {
    SESSION: '1500ms', PUB_INTERVAL: '20ms', PING_INTERVAL: '100ms', RESUB_EVERY: '10', BINARY_EVERY: '3', ACK_EVERY: '2', SIZE: '64', ROOMS: '1',
  });
  globalThis.__k6sim = new FakeBus();
  m.soak(m.setup());
  const n = checksPassed();
  assert.ok(globalThis.__k6stub.checks.some(([c]) => /trace-id/.test(c)), 'binary messages were checked');
  assert.ok(n >= 3);
  assert.ok(sum('arq_msgs_published') >= 10, `published ${sum('arq_msgs_published')}`);
  assert.ok(sum('arq_msgs_delivered') >= 10, `delivered ${sum('arq_msgs_delivered')}`);
  assertTimes('arq_delivery_ms', 10);
  assertTimes('arq_pub_ack_ms', 3);
  assertTimes('arq_pong_ms', 3);
  assertTimes('arq_sub_ack_ms', 3); // room + wildcard + resubs
  for (const k of ['arq_msgs_lost', 'arq_msgs_reordered', 'arq_missing_replies', 'arq_bad_frames', 'arq_unexpected_close']) {
    assert.equal(sum(k), 0, k);
  }
});

test('soak.js: a server close mid-session is an unexpected close', STEP, async () => {
  const m = await load('soak.js', { SESSION: '1500ms', PUB_INTERVAL: '20ms', PING_INTERVAL: '100ms', ROOMS: '1' });
  const bus = new FakeBus({
    corrupt: (f) => {
      if (f.op === 'pong') bus.sockets.forEach((s) => s.close(1008)); // the "server" hangs up
      return f;
    },
  });
  globalThis.__k6sim = bus;
  m.soak(m.setup());
  assert.equal(sum('arq_unexpected_close'), 1);
});

for (const [name, env] of [['sub', {}], ['no sub', { SUB: '0' }], ['header auth', { ARQ_AUTH: 'header' }]]) {
  test(`storm.js (${name}): each iteration connects, is welcomed and closes`, STEP, async () => {
    const m = await load('storm.js', env);
    globalThis.__k6sim = new FakeBus();
    const data = m.setup();
    for (let i = 0; i < 5; i++) {
      globalThis.__ITER = i;
      m.storm(data);
    }
    checksPassed();
    assert.deepEqual(samples('arq_connect_ok'), [1, 1, 1, 1, 1]);
    assertTimes('arq_welcome_ms', 5);
    assert.equal(samples('arq_sub_ack_ms').length, env.SUB === '0' ? 0 : 5);
    assert.equal(sum('arq_connect_rejected'), 0);
    assert.equal(sum('arq_bad_frames'), 0);
  });
}

test('storm.js: refused upgrades count as failed connects', STEP, async () => {
  const m = await load('storm.js', {});
  globalThis.__k6sim = new FakeBus({ reject: 401 });
  m.storm(m.setup());
  assert.deepEqual(samples('arq_connect_ok'), [0]);
  assert.equal(sum('arq_connect_rejected'), 1);
});

const PRESENCE = { VUS: '1', ROOMS: '1', DURATION: '10s', SESSION: '1500ms', QUERY_INTERVAL: '100ms', PAGE: '2' };

test('presence.js: joins, sees its own join, counts and pages through its room, leaves', STEP, async () => {
  const m = await load('presence.js', PRESENCE);
  const bus = new FakeBus({ presetMembers: 5 });
  globalThis.__k6sim = bus;
  const data = m.setup();
  m.member(data);
  m.member(data); // a second session of the same VU: the first one left
  checksPassed();
  assertTimes('arq_sub_ack_ms', 2);
  assertTimes('arq_presence_join_ms', 2);
  // count-only and listing queries alternate; a listing of 6 members in pages of 2 is 3 answers
  assertTimes('arq_presence_query_ms', 6);
  assert.equal(sum('arq_presence_events'), 2); // one own join per session
  assert.equal(sum('arq_presence_missing'), 0);
  assert.equal(sum('arq_presence_unavailable'), 0);
  assert.equal(sum('arq_missing_replies'), 0);
  assert.equal(sum('arq_bad_frames'), 0);
  assert.equal(sum('arq_unexpected_close'), 0);
  assert.equal([...bus.rooms.values()][0].size, 5, 'the sessions left the room');
});

test('presence.js: UNAVAILABLE answers and a listing without this member are counted', STEP, async () => {
  let m = await load('presence.js', PRESENCE);
  globalThis.__k6sim = new FakeBus({ presenceDown: true });
  m.member(m.setup());
  assert.ok(sum('arq_presence_unavailable') >= 3, `unavailable ${sum('arq_presence_unavailable')}`);
  assert.equal(samples('arq_presence_query_ms').length, 0);
  assert.equal(sum('arq_bad_frames'), 0);

  m = await load('presence.js', PRESENCE);
  // drop this member from the listings the bus sends
  globalThis.__k6sim = new FakeBus({
    presetMembers: 3,
    corrupt: (f) => (f.op === 'presence' && f.members ? Object.assign({}, f, { members: f.members.filter((x) => !x.session.startsWith('sim')) }) : f),
  });
  m.member(m.setup());
  assert.ok(sum('arq_presence_missing') >= 1, `missing ${sum('arq_presence_missing')}`);
});
