// Options the k6 scenarios share: the summary's Trend columns and the
// thresholds of k6/README.md ("Thresholds"), with their -e overrides.
// Plain ES2020 that imports only ./env.js, so node loads it too.

import { env } from './env.js';

// SUMMARY_TREND_STATS are the Trend columns of the end-of-test summary.
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'];

function p99(name, def) {
  return () => ['p(99)<' + env(name, def)];
}

function none() {
  return ['count==0'];
}

// RULES: metric -> its threshold list, read from the env when called.
const RULES = {
  // TCP connect + HTTP upgrade with JWT verification, measured by k6
  ws_connecting: p99('P99_CONNECT_MS', '10'),
  // connect start -> WELCOME frame parsed
  arq_welcome_ms: p99('P99_WELCOME_MS', '20'),
  // publish -> deliver, from the payload stamp to the subscriber's receive
  arq_delivery_ms: p99('P99_DELIVERY_MS', '5'),
  // publish with ack -> ACK
  arq_pub_ack_ms: p99('P99_ACK_MS', '5'),
  // subscribe -> ACK (route registered)
  arq_sub_ack_ms: p99('P99_ACK_MS', '5'),
  // protocol ping -> pong round trip on an established connection
  arq_pong_ms: p99('P99_PONG_MS', '5'),
  // presence sub sent -> this connection's own presence_update (gateway ->
  // NATS -> brain -> store -> NATS -> gateway)
  arq_presence_join_ms: p99('P99_PRESENCE_JOIN_MS', '50'),
  // presence query -> answer (one page; a NATS request to a brain)
  arq_presence_query_ms: p99('P99_PRESENCE_QUERY_MS', '20'),
  arq_presence_unavailable: none,
  arq_presence_missing: none,
  // storm: share of attempts welcomed (and sub-acked) in time
  arq_connect_ok: () => ['rate>' + env('MIN_OK', '0.99')],
  arq_msgs_lost: none,
  arq_msgs_reordered: none,
  arq_fanout_incomplete: none,
  arq_missing_replies: none,
  arq_bad_frames: none,
  arq_unexpected_close: none,
};

// thresholds returns options.thresholds for the named metrics, in that
// order, followed by the entries of extra (the script's own, e.g. checks).
// A name without a shared rule throws.
export function thresholds(names, extra) {
  const out = {};
  for (let i = 0; i < names.length; i++) {
    if (!Object.prototype.hasOwnProperty.call(RULES, names[i])) {
      throw new Error('thresholds: no shared rule for ' + names[i]);
    }
    out[names[i]] = RULES[names[i]]();
  }
  return Object.assign(out, extra || {});
}
