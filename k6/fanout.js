// fanout.js: one publisher -> SUBS subscribers on one subject, measuring
// publish -> deliver latency (a Trend) and loss. Subscribers connect and
// subscribe during WARMUP; the publisher then sends RATE stamped messages
// per second for DURATION and a final end marker carrying the count, so
// every subscriber can tell exactly how many it missed.
//
//   TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h)
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e SUBS=50 -e RATE=1000 k6/fanout.js
//
// SUBS x RATE is the delivery rate: the defaults (50 x 1000) are the 50k
// msg/s of the publish -> deliver target in SPEC.md.
//
// Env: ARQ_URL, ARQ_TOKEN (required), ARQ_AUTH (query|header), SUBS (50),
// RATE (1000 msg/s), SIZE (payload bytes, 128), DURATION (30s), WARMUP (5s),
// DRAIN (5s), TICK (10ms, publisher batch interval), ACK_EVERY (100: every
// Nth publish asks for an ACK), SUBJECT (k6.fanout.<run>),
// P99_DELIVERY_MS (5), P99_ACK_MS (5), P99_CONNECT_MS (10).

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import * as arq from './lib/protocol.js';
import { env, envInt, envMs } from './lib/env.js';
import { SUMMARY_TREND_STATS, thresholds } from './lib/options.js';
import { connection, dial, onFrames, requireToken, UPGRADED } from './lib/session.js';

const CONN = connection();
const SUBS = envInt('SUBS', 50);
const RATE = envInt('RATE', 1000);
const SIZE = envInt('SIZE', 128);
const DURATION_MS = envMs('DURATION', '30s');
const WARMUP_MS = envMs('WARMUP', '5s');
const DRAIN_MS = envMs('DRAIN', '5s');
const TICK_MS = Math.max(1, envMs('TICK', '10ms'));
const ACK_EVERY = envInt('ACK_EVERY', 100);
const END_PREFIX = 'arqend ';

// publish -> deliver, from the stamp in the payload to the subscriber's
// receive time (one k6 process, one clock)
const deliveryMs = new Trend('arq_delivery_ms', true);
// gateway accept (MSG ts) -> subscriber receive; same host clocks only
const fromGatewayMs = new Trend('arq_delivery_from_gateway_ms', true);
const pubAckMs = new Trend('arq_pub_ack_ms', true);
const subAckMs = new Trend('arq_sub_ack_ms', true);
const delivered = new Counter('arq_msgs_delivered');
const published = new Counter('arq_msgs_published');
const lost = new Counter('arq_msgs_lost');
const reordered = new Counter('arq_msgs_reordered');
const incomplete = new Counter('arq_fanout_incomplete');
const badFrames = new Counter('arq_bad_frames');

const subscriberMs = WARMUP_MS + DURATION_MS + DRAIN_MS;

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      vus: SUBS,
      iterations: 1,
      maxDuration: subscriberMs + 30000 + 'ms',
      exec: 'subscriber',
    },
    publisher: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: 1,
      startTime: WARMUP_MS + 'ms',
      maxDuration: DURATION_MS + DRAIN_MS + 30000 + 'ms',
      exec: 'publisher',
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: thresholds(
    ['arq_delivery_ms', 'arq_pub_ack_ms', 'ws_connecting', 'arq_msgs_lost', 'arq_msgs_reordered', 'arq_fanout_incomplete', 'arq_bad_frames'],
    { checks: ['rate==1'] }
  ),
};

export function setup() {
  requireToken(CONN);
  return { subject: env('SUBJECT', 'k6.fanout.r' + Date.now().toString(36)) };
}

export function subscriber(data) {
  let welcomed = false;
  let subscribed = false;
  let received = 0;
  let lastSeq = 0;
  let total = -1;
  const res = dial(ws, CONN, function (socket) {
    socket.setTimeout(function () {
      socket.close(); // end marker never came
    }, subscriberMs);
    onFrames(socket, {
      badFrames: badFrames,
      subject: data.subject,
      welcome: function () {
        welcomed = true;
      },
      subscribed: function (ms) {
        if (subscribed) {
          badFrames.add(1);
          return;
        }
        subscribed = true;
        subAckMs.add(ms);
      },
      frame: function (f, now) {
        if (f.op === 'msg') {
          if (f.data !== undefined && f.data.indexOf(END_PREFIX) === 0) {
            total = parseInt(f.data.slice(END_PREFIX.length), 10);
            socket.close();
            return;
          }
          const d = arq.deliveryLatencyMs(f, now);
          if (!d) {
            badFrames.add(1);
            return;
          }
          received++;
          delivered.add(1);
          if (d.total !== null) deliveryMs.add(d.total);
          if (d.fromGateway !== null) fromGatewayMs.add(d.fromGateway);
          if (d.seq <= lastSeq) reordered.add(1);
          lastSeq = d.seq;
          return;
        }
        badFrames.add(1);
      },
    });
  });
  check(res, UPGRADED);
  check(welcomed, { 'subscriber welcomed': (w) => w });
  check(subscribed, { 'subscriber subscribed': (s) => s });
  if (total < 0) {
    incomplete.add(1);
  } else if (received < total) {
    lost.add(total - received);
  }
}

export function publisher(data) {
  let welcomed = false;
  let seq = 0;
  let endAcked = false;
  const pending = {};
  const perTick = (RATE * TICK_MS) / 1000;
  const res = dial(ws, CONN, function (socket) {
    let credit = 0;
    let start = 0;
    let ending = false;
    onFrames(socket, {
      badFrames: badFrames,
      welcome: function () {
        welcomed = true;
        start = Date.now();
        // k6/ws has no clearInterval: the tick goes idle once ending is set
        socket.setInterval(function () {
          if (ending) return;
          if (Date.now() - start >= DURATION_MS) {
            ending = true;
            // the end marker rides the same ordered stream as the data
            socket.send(arq.pub(1, data.subject, END_PREFIX + seq, { ack: true }));
            socket.setTimeout(function () {
              socket.close();
            }, DRAIN_MS);
            return;
          }
          credit += perTick;
          while (credit >= 1) {
            credit -= 1;
            seq++;
            const t = arq.nowMs();
            const ack = ACK_EVERY > 0 && seq % ACK_EVERY === 0;
            const id = ack ? seq + 1 : undefined; // id 1 is the end marker
            if (ack) pending[id] = t;
            socket.send(arq.pub(id, data.subject, arq.stamp(seq, t, SIZE), { ack: ack }));
          }
        }, TICK_MS);
      },
      frame: function (f, now) {
        if (f.op === 'ack') {
          if (f.id === 1) {
            endAcked = true;
            return;
          }
          const t = pending[f.id];
          if (t === undefined) {
            badFrames.add(1);
            return;
          }
          delete pending[f.id];
          pubAckMs.add(now - t);
          return;
        }
        badFrames.add(1); // error frames included
      },
    });
  });
  check(res, UPGRADED);
  published.add(seq);
  check(welcomed, { 'publisher welcomed': (w) => w });
  check(endAcked, { 'end marker acked': (a) => a });
  const missing = Object.keys(pending).length;
  check(missing, { 'every publish ack arrived': (n) => n === 0 });
}
