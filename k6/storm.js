// storm.js: connect/disconnect churn, the reconnect storm of SPEC.md
// ("10,000 clients reconnecting at once are throttled, not fatal"; handshake
// p99 target < 2 ms). Each iteration opens a WebSocket, waits for WELCOME,
// optionally subscribes (so teardown has a subscription to remove) and
// closes at once.
//
// MODE=burst (default): VUS VUs start together and each reconnects
// ITERATIONS times back to back, as a fleet of clients does after a node
// restart. MODE=rate: RATE new connections per second for DURATION
// (constant-arrival-rate), for a steady churn at a known rate.
//
//   TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h)
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e VUS=10000 -e ITERATIONS=5 k6/storm.js
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e MODE=rate -e RATE=2000 k6/storm.js
//
// Env: ARQ_URL, ARQ_TOKEN (required), ARQ_AUTH (query|header), MODE
// (burst|rate), VUS (1000), ITERATIONS (20), RATE (1000/s), DURATION (60s),
// SUB (1: subscribe before closing; 0: connect only), MIN_OK (0.99: share of
// attempts that must get a WELCOME), MAX_DURATION (10m, burst mode),
// P99_CONNECT_MS (10), P99_WELCOME_MS (20).

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import * as arq from './lib/protocol.js';
import { env, envInt, envMs } from './lib/env.js';
import { SUMMARY_TREND_STATS, thresholds } from './lib/options.js';
import { connection, dial, onFrames, requireToken } from './lib/session.js';

const CONN = connection();
const MODE = env('MODE', 'burst');
const VUS = envInt('VUS', 1000);
const ITERATIONS = envInt('ITERATIONS', 20);
const RATE = envInt('RATE', 1000);
const DURATION_MS = envMs('DURATION', '60s');
const SUB = env('SUB', '1') !== '0';
// a session that has not seen WELCOME (and the sub ACK) by then is a failure
const SESSION_TIMEOUT_MS = envMs('SESSION_TIMEOUT', '10s');

const welcomeMs = new Trend('arq_welcome_ms', true);
const subAckMs = new Trend('arq_sub_ack_ms', true);
const connectOK = new Rate('arq_connect_ok');
const rejected = new Counter('arq_connect_rejected');
const badFrames = new Counter('arq_bad_frames');

function scenario() {
  if (MODE === 'rate') {
    return {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION_MS + 'ms',
      preAllocatedVUs: Math.max(10, Math.ceil(RATE / 10)),
      maxVUs: Math.max(100, RATE * 2),
      exec: 'storm',
    };
  }
  if (MODE !== 'burst') throw new Error('MODE must be burst or rate');
  return {
    executor: 'per-vu-iterations',
    vus: VUS,
    iterations: ITERATIONS,
    maxDuration: envMs('MAX_DURATION', '10m') + 'ms',
    exec: 'storm',
  };
}

export const options = {
  scenarios: { storm: scenario() },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: thresholds(['ws_connecting', 'arq_welcome_ms', 'arq_connect_ok', 'arq_bad_frames']),
};

export function setup() {
  requireToken(CONN);
  return { base: 'k6.storm.r' + Date.now().toString(36) };
}

export function storm(data) {
  const t0 = arq.nowMs();
  let ok = false;
  let res = null;
  try {
    res = connectOnce();
  } catch (e) {
    // a refused or failed handshake (k6 throws with options.throw)
    console.warn('storm: ' + e);
  }
  const status = res ? res.status : 0;
  if (status !== 101) rejected.add(1, { status: String(status) });
  connectOK.add(ok);
  check(ok, { 'welcome (and sub ack) before close': (x) => x });

  function connectOnce() {
    return dial(ws, CONN, function (socket) {
      socket.setTimeout(function () {
        socket.close();
      }, SESSION_TIMEOUT_MS);
      onFrames(socket, {
        badFrames: badFrames,
        subject: SUB ? data.base + '.' + __VU + '.>' : '',
        // a rejected or binary frame ends the attempt
        rejected: function () {
          socket.close();
        },
        binary: function () {
          socket.close();
        },
        welcome: function (f, now) {
          welcomeMs.add(now - t0);
          if (!SUB) {
            ok = true;
            socket.close(1000);
          }
        },
        subscribed: function (ms) {
          subAckMs.add(ms);
          ok = true;
          socket.close(1000);
        },
        frame: function () {
          badFrames.add(1);
          socket.close(1000);
        },
      });
    });
  }
}
