// connect.js: connection ramp. VUs ramp up to VUS open WebSockets, hold
// them, and ramp down. Each connection reads WELCOME, subscribes to its own
// subject, and pings every PING_INTERVAL, so the gateway holds real
// per-connection state (a session, one subscription, heartbeats).
//
//   TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h)
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e VUS=5000 k6/connect.js
//
// Env: ARQ_URL (ws://127.0.0.1:8080), ARQ_TOKEN (required), ARQ_AUTH
// (query|header, default query), VUS (1000), RAMP (30s), HOLD (60s),
// SESSION (how long one connection stays open, default RAMP+HOLD),
// PING_INTERVAL (5s), P99_CONNECT_MS (10), P99_WELCOME_MS (20),
// P99_PONG_MS (5), P99_ACK_MS (5). See k6/README.md for what each threshold means.

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import * as arq from './lib/protocol.js';
import { envInt, envMs } from './lib/env.js';
import { SUMMARY_TREND_STATS, thresholds } from './lib/options.js';
import { connection, dial, onFrames, requireToken, UPGRADED } from './lib/session.js';

const CONN = connection();
const VUS = envInt('VUS', 1000);
const RAMP_MS = envMs('RAMP', '30s');
const HOLD_MS = envMs('HOLD', '60s');
const SESSION_MS = envMs('SESSION', String(RAMP_MS + HOLD_MS) + 'ms');
const PING_MS = envMs('PING_INTERVAL', '5s');

const welcomeMs = new Trend('arq_welcome_ms', true);
const pongMs = new Trend('arq_pong_ms', true);
const subAckMs = new Trend('arq_sub_ack_ms', true);
const badFrames = new Counter('arq_bad_frames');
const unexpectedCloses = new Counter('arq_unexpected_close');

export const options = {
  scenarios: {
    connect: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP_MS + 'ms', target: VUS },
        { duration: HOLD_MS + 'ms', target: VUS },
        { duration: '5s', target: 0 },
      ],
      gracefulRampDown: '5s',
      exec: 'connect',
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: thresholds(
    ['ws_connecting', 'arq_welcome_ms', 'arq_pong_ms', 'arq_sub_ack_ms', 'arq_bad_frames', 'arq_unexpected_close'],
    { checks: ['rate>0.999'] }
  ),
};

export function setup() {
  requireToken(CONN);
  return { run: 'c' + Date.now().toString(36), start: Date.now() };
}

export function connect(data) {
  const subject = 'k6.connect.' + data.run + '.' + __VU;
  // end sessions with the hold phase, so ramp-down never cuts one short
  // (an interrupted session would look like an unexpected close)
  const left = data.start + RAMP_MS + HOLD_MS - Date.now();
  const sessionMs = Math.max(1000, Math.min(SESSION_MS, left));
  const t0 = arq.nowMs();
  let welcomed = false;
  let nextId = 1;
  const pending = {};

  const res = dial(ws, CONN, function (socket) {
    const s = onFrames(socket, {
      badFrames: badFrames,
      unexpectedClose: unexpectedCloses,
      isWelcome: (f) => check(f, { 'first frame is welcome': (x) => x.op === 'welcome' && x.protocol_version === arq.PROTOCOL_VERSION }),
      welcome: function (f, now) {
        welcomed = true;
        welcomeMs.add(now - t0);
        const id = nextId++;
        pending[id] = { kind: 'sub', t: arq.nowMs() };
        socket.send(arq.sub(id, subject));
        socket.setInterval(function () {
          const pid = nextId++;
          pending[pid] = { kind: 'ping', t: arq.nowMs() };
          socket.send(arq.ping(pid));
        }, PING_MS);
        socket.setTimeout(function () {
          s.close();
        }, sessionMs);
      },
      frame: function (f, now) {
        if (f.op === 'ack' || f.op === 'pong' || f.op === 'error') {
          const p = pending[f.id];
          delete pending[f.id];
          if (f.op === 'error' || !p) {
            badFrames.add(1);
            return;
          }
          if (p.kind === 'sub') subAckMs.add(now - p.t);
          else pongMs.add(now - p.t);
          return;
        }
        badFrames.add(1); // nothing publishes to this subject
      },
    });
    socket.on('error', function (e) {
      if (!s.closing) console.warn('connect: vu ' + __VU + ': ' + (e && e.error ? e.error() : e));
    });
  });
  check(res, UPGRADED);
  check(welcomed, { 'welcome received': (w) => w === true });
}
