// soak.js: mixed traffic for a long DURATION. VUS connections are spread
// over ROOMS rooms; each subscribes to its room and to a tenant-wide
// wildcard, publishes stamped text (and every BINARY_EVERY-th publish a
// binary data_b64 message with a trace-id header) to its room every
// PUB_INTERVAL, pings every PING_INTERVAL, and now and then drops and
// re-adds its room subscription. Each connection lives SESSION, then the VU
// reconnects, so the run also exercises session setup/teardown for hours.
// Delivery latency, ACK and PONG round trips, loss (per-publisher sequence
// gaps), protocol errors and unexpected closes are all measured.
//
//   TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h)
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e VUS=200 -e DURATION=30m k6/soak.js
//
// Env: ARQ_URL, ARQ_TOKEN (required, its ttl must outlast DURATION),
// ARQ_AUTH (query|header), VUS (100), ROOMS (10), DURATION (10m),
// SESSION (60s), PUB_INTERVAL (100ms), PING_INTERVAL (5s), SIZE (256),
// ACK_EVERY (10), BINARY_EVERY (20), RESUB_EVERY (100 publishes),
// P99_DELIVERY_MS (5), P99_ACK_MS (5), P99_PONG_MS (5), P99_CONNECT_MS (10).

import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import * as arq from './lib/protocol.js';
import { envInt, envMs } from './lib/env.js';
import { SUMMARY_TREND_STATS, thresholds } from './lib/options.js';
import { connection, dial, onFrames, requireToken, UPGRADED } from './lib/session.js';

const CONN = connection();
const VUS = envInt('VUS', 100);
const ROOMS = Math.max(1, envInt('ROOMS', 10));
const DURATION_MS = envMs('DURATION', '10m');
const SESSION_MS = envMs('SESSION', '60s');
const PUB_MS = Math.max(1, envMs('PUB_INTERVAL', '100ms'));
const PING_MS = envMs('PING_INTERVAL', '5s');
const SIZE = envInt('SIZE', 256);
const ACK_EVERY = envInt('ACK_EVERY', 10);
const BINARY_EVERY = envInt('BINARY_EVERY', 20);
const RESUB_EVERY = envInt('RESUB_EVERY', 100);
// sessions stop publishing this long before they close, so messages in
// flight reach every roommate before it disconnects
const QUIET_MS = 1000;

const deliveryMs = new Trend('arq_delivery_ms', true);
const fromGatewayMs = new Trend('arq_delivery_from_gateway_ms', true);
const pubAckMs = new Trend('arq_pub_ack_ms', true);
const subAckMs = new Trend('arq_sub_ack_ms', true);
const pongMs = new Trend('arq_pong_ms', true);
const welcomeMs = new Trend('arq_welcome_ms', true);
const delivered = new Counter('arq_msgs_delivered');
const published = new Counter('arq_msgs_published');
const lost = new Counter('arq_msgs_lost');
const reordered = new Counter('arq_msgs_reordered');
const missingReplies = new Counter('arq_missing_replies');
const badFrames = new Counter('arq_bad_frames');
const unexpectedCloses = new Counter('arq_unexpected_close');

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION_MS + 'ms',
      gracefulStop: Math.ceil(SESSION_MS / 1000) + 10 + 's',
      exec: 'soak',
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: thresholds(
    ['arq_delivery_ms', 'arq_pub_ack_ms', 'arq_sub_ack_ms', 'arq_pong_ms', 'ws_connecting',
      'arq_msgs_lost', 'arq_msgs_reordered', 'arq_missing_replies', 'arq_bad_frames', 'arq_unexpected_close'],
    { checks: ['rate>0.999'] }
  ),
};

export function setup() {
  requireToken(CONN);
  return { base: 'k6.soak.r' + Date.now().toString(36) };
}

// b64 encodes a string of ASCII characters as standard padded base64 (k6
// has k6/encoding, node has Buffer; this works in both and in the shared
// module's tests).
function b64(s) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let out = '';
  for (let i = 0; i < s.length; i += 3) {
    const a = s.charCodeAt(i);
    const b = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    const c = i + 2 < s.length ? s.charCodeAt(i + 2) : 0;
    const n = (a << 16) | (b << 8) | c;
    out += abc[(n >> 18) & 63] + abc[(n >> 12) & 63];
    out += i + 1 < s.length ? abc[(n >> 6) & 63] : '=';
    out += i + 2 < s.length ? abc[n & 63] : '=';
  }
  return out;
}

// unb64 decodes standard base64 of ASCII text.
function unb64(s) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let out = '';
  for (let i = 0; i < s.length; i += 4) {
    const n = (abc.indexOf(s[i]) << 18) | (abc.indexOf(s[i + 1]) << 12) |
      ((s[i + 2] === '=' ? 0 : abc.indexOf(s[i + 2])) << 6) | (s[i + 3] === '=' ? 0 : abc.indexOf(s[i + 3]));
    out += String.fromCharCode((n >> 16) & 255);
    if (s[i + 2] !== '=') out += String.fromCharCode((n >> 8) & 255);
    if (s[i + 3] !== '=') out += String.fromCharCode(n & 255);
  }
  return out;
}

export function soak(data) {
  const room = data.base + '.room' + (__VU % ROOMS);
  const wildcard = data.base + '.none.>'; // held all session, never matched: a second pattern in the trie
  const tag = 'v' + __VU + 'i' + __ITER;
  const pending = {}; // request id -> {kind, t}
  const lastSeq = {}; // publisher tag -> last seq seen
  let nextId = 1;
  let seq = 0;
  let welcomed = false;
  let quiet = false;
  let inRoom = false; // between the room sub's ACK and the next unsub
  const t0 = arq.nowMs();

  function request(socket, kind, frameFn) {
    const id = nextId++;
    pending[id] = { kind: kind, t: arq.nowMs() };
    socket.send(frameFn(id));
    return id;
  }

  const res = dial(ws, CONN, function (socket) {
    const s = onFrames(socket, {
      badFrames: badFrames,
      unexpectedClose: unexpectedCloses,
      rejected: function (e) {
        console.warn('soak: ' + e.message);
      },
      welcome: function (f, now) {
        welcomed = true;
        welcomeMs.add(now - t0);
        request(socket, 'sub-room', (id) => arq.sub(id, room));
        request(socket, 'sub', (id) => arq.sub(id, wildcard));
        socket.setInterval(function () {
          if (quiet || !inRoom) return;
          seq++;
          const t = arq.nowMs();
          const ack = ACK_EVERY > 0 && seq % ACK_EVERY === 0;
          const id = ack ? nextId++ : undefined;
          if (ack) pending[id] = { kind: 'pub', t: t };
          const payload = arq.stamp(seq, t, SIZE, tag);
          if (BINARY_EVERY > 0 && seq % BINARY_EVERY === 0) {
            socket.send(arq.pub(id, room, b64(payload), { b64: true, ack: ack, headers: { 'trace-id': tag + '-' + seq } }));
          } else {
            socket.send(arq.pub(id, room, payload, { ack: ack }));
          }
          published.add(1);
          if (RESUB_EVERY > 0 && seq % RESUB_EVERY === 0) {
            // leave and rejoin the room; messages published in between are
            // legitimately missed, so sequence tracking restarts
            inRoom = false;
            request(socket, 'unsub', (rid) => arq.unsub(rid, room));
            request(socket, 'sub-room', (rid) => arq.sub(rid, room));
          }
        }, PUB_MS);
        if (PING_MS > 0) {
          socket.setInterval(function () {
            if (!quiet) request(socket, 'ping', (id) => arq.ping(id));
          }, PING_MS);
        }
        socket.setTimeout(function () {
          quiet = true;
        }, Math.max(0, SESSION_MS - QUIET_MS));
        socket.setTimeout(function () {
          s.close();
        }, SESSION_MS);
      },
      frame: function (f, now, text) {
        if (f.op === 'msg') {
          let payload = f.data;
          if (f.binary) {
            payload = unb64(f.data_b64);
            check(f, { 'binary msg keeps its trace-id': (x) => x.trace_id !== undefined && x.headers !== undefined && x.headers['trace-id'] === x.trace_id });
          }
          const d = arq.deliveryLatencyMs({ op: 'msg', data: payload, ts: f.ts, ts_raw: f.ts_raw }, now);
          if (!d || f.subject !== room) {
            badFrames.add(1);
            return;
          }
          delivered.add(1);
          if (d.total !== null) deliveryMs.add(d.total);
          if (d.fromGateway !== null) fromGatewayMs.add(d.fromGateway);
          const prev = lastSeq[d.tag];
          if (prev !== undefined) {
            if (d.seq <= prev) reordered.add(1);
            else if (d.seq > prev + 1) lost.add(d.seq - prev - 1);
          }
          lastSeq[d.tag] = d.seq;
          return;
        }
        const p = pending[f.id];
        if (p === undefined || f.op === 'error' || (p.kind === 'ping') !== (f.op === 'pong')) {
          badFrames.add(1);
          console.warn('soak: unexpected ' + text);
          return;
        }
        delete pending[f.id];
        if (p.kind === 'ping') pongMs.add(now - p.t);
        else if (p.kind === 'pub') pubAckMs.add(now - p.t);
        else subAckMs.add(now - p.t);
        if (p.kind === 'sub-room') inRoom = true;
        if (p.kind === 'unsub') {
          // forget every sequence: whatever was published while we were out
          // of the room is not a loss
          const keys = Object.keys(lastSeq);
          for (let i = 0; i < keys.length; i++) delete lastSeq[keys[i]];
        }
      },
    });
  });
  check(res, UPGRADED);
  check(welcomed, { 'welcome received': (w) => w });
  missingReplies.add(Object.keys(pending).length);
  sleep(0.1 + Math.random() * 0.4); // spread reconnects
}
