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


const URL = env('ARQ_URL', 'ws://127.0.0.1:8080');
const TOKEN = env('ARQ_TOKEN', '');
const AUTH = env('ARQ_AUTH', 'query');
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
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  thresholds: {
    arq_delivery_ms: ['p(99)<' + env('P99_DELIVERY_MS', '5')],
    arq_pub_ack_ms: ['p(99)<' + env('P99_ACK_MS', '5')],
    ws_connecting: ['p(99)<' + env('P99_CONNECT_MS', '10')],
    arq_msgs_lost: ['count==0'],
    arq_msgs_reordered: ['count==0'],
    arq_fanout_incomplete: ['count==0'],
    arq_bad_frames: ['count==0'],
    checks: ['rate==1'],
  },
};

export function setup() {
  if (!TOKEN) throw new Error('set ARQ_TOKEN (TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h))');
  return { subject: env('SUBJECT', 'k6.fanout.r' + Date.now().toString(36)) };
}

function dial(handler) {
  const params = AUTH === 'header' ? { headers: { Authorization: 'Bearer ' + TOKEN } } : {};
  const res = ws.connect(arq.socketURL(URL, AUTH === 'header' ? '' : TOKEN), params, handler);
  check(res, { 'upgrade status 101': (r) => r && r.status === 101 });
}

export function subscriber(data) {
  let welcomed = false;
  let subscribed = false;
  let received = 0;
  let lastSeq = 0;
  let total = -1;
  let subSent = 0;
  dial(function (socket) {
    socket.setTimeout(function () {
      socket.close(); // end marker never came
    }, subscriberMs);
    socket.on('message', function (text) {
      const now = arq.nowMs();
      const r = arq.tryParse(text);
      if (r.error) {
        badFrames.add(1);
        return;
      }
      const f = r.frame;
      if (!welcomed) {
        welcomed = f.op === 'welcome';
        if (!welcomed) {
          badFrames.add(1);
          socket.close();
          return;
        }
        subSent = arq.nowMs();
        socket.send(arq.sub(1, data.subject));
        return;
      }
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
      if (f.op === 'ack' && f.id === 1 && !subscribed) {
        subscribed = true;
        subAckMs.add(now - subSent);
        return;
      }
      badFrames.add(1);
    });
    socket.on('binaryMessage', function () {
      badFrames.add(1);
    });
  });
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
  dial(function (socket) {
    let credit = 0;
    let start = 0;
    let ending = false;
    socket.on('message', function (text) {
      const now = arq.nowMs();
      const r = arq.tryParse(text);
      if (r.error) {
        badFrames.add(1);
        return;
      }
      const f = r.frame;
      if (!welcomed) {
        welcomed = f.op === 'welcome';
        if (!welcomed) {
          badFrames.add(1);
          socket.close();
          return;
        }
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
        return;
      }
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
    });
  });
  published.add(seq);
  check(welcomed, { 'publisher welcomed': (w) => w });
  check(endAcked, { 'end marker acked': (a) => a });
  const missing = Object.keys(pending).length;
  check(missing, { 'every publish ack arrived': (n) => n === 0 });
}
