// Static checks of the k6 scenarios, runnable without k6:
//  - the syntax checker (k6/tools/syntax-check.mjs) passes on every script
//    and really fails on broken ones;
//  - each script's init context runs under node with k6 stand-ins, and its
//    `options` are coherent: every scenario's exec is an exported function,
//    every threshold names a built-in k6 metric or one the script creates,
//    with an aggregation that fits the metric's type.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { mkdtempSync, mkdirSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { checkFile, defaultFiles } from '../tools/syntax-check.mjs';

register(new URL('../tools/k6-stub-hooks.mjs', import.meta.url));

const K6_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SCRIPTS = ['connect.js', 'fanout.js', 'soak.js', 'storm.js', 'presence.js'];

// k6 built-in metrics a threshold may name, with their types.
const BUILTIN = {
  checks: 'rate',
  data_received: 'counter',
  data_sent: 'counter',
  dropped_iterations: 'counter',
  iteration_duration: 'trend',
  iterations: 'counter',
  vus: 'gauge',
  vus_max: 'gauge',
  ws_connecting: 'trend',
  ws_msgs_received: 'counter',
  ws_msgs_sent: 'counter',
  ws_ping: 'trend',
  ws_session_duration: 'trend',
  ws_sessions: 'counter',
};
const AGGREGATIONS = {
  counter: ['count', 'rate'],
  gauge: ['value'],
  rate: ['rate'],
  trend: ['avg', 'min', 'max', 'med', 'p'],
};
const EXECUTORS = ['shared-iterations', 'per-vu-iterations', 'constant-vus', 'ramping-vus',
  'constant-arrival-rate', 'ramping-arrival-rate', 'externally-controlled'];
const DURATION = /^\d+(\.\d+)?(ms|s|m|h)$/;

let loads = 0;
// load imports a fresh copy of a k6 script with the given __ENV.
async function load(script, env) {
  globalThis.__ENV = env;
  globalThis.__VU = 0;
  globalThis.__ITER = 0;
  globalThis.__k6stub = { metrics: {}, checks: [] };
  const url = pathToFileURL(join(K6_DIR, script)).href + '?load=' + ++loads;
  const mod = await import(url);
  return { mod, metrics: globalThis.__k6stub.metrics };
}

function checkOptions(script, mod, metrics) {
  const o = mod.options;
  assert.ok(o && typeof o === 'object', `${script}: exports options`);
  const names = Object.keys(o.scenarios || {});
  assert.ok(names.length > 0, `${script}: has scenarios`);
  for (const n of names) {
    const s = o.scenarios[n];
    assert.ok(EXECUTORS.includes(s.executor), `${script}: scenario ${n}: executor ${s.executor}`);
    const exec = s.exec || 'default';
    assert.equal(typeof mod[exec], 'function', `${script}: scenario ${n}: exec "${exec}" is an exported function`);
    for (const k of ['duration', 'maxDuration', 'startTime', 'gracefulStop', 'gracefulRampDown', 'timeUnit']) {
      if (s[k] !== undefined) assert.match(s[k], DURATION, `${script}: scenario ${n}: ${k}=${s[k]}`);
    }
    for (const st of s.stages || []) assert.match(st.duration, DURATION, `${script}: scenario ${n}: stage duration`);
    for (const k of ['vus', 'iterations', 'rate', 'preAllocatedVUs', 'maxVUs']) {
      if (s[k] !== undefined) assert.ok(Number.isInteger(s[k]) && s[k] > 0, `${script}: scenario ${n}: ${k}=${s[k]}`);
    }
  }
  const th = o.thresholds || {};
  assert.ok(Object.keys(th).length > 0, `${script}: has thresholds`);
  for (const key of Object.keys(th)) {
    const metric = key.replace(/\{.*\}$/, '');
    const type = BUILTIN[metric] || (metrics[metric] && metrics[metric].type);
    assert.ok(type, `${script}: threshold on "${metric}", which is neither built in nor created by the script`);
    for (const expr of th[key]) {
      const m = /^(avg|min|max|med|count|rate|value|p\((\d+(\.\d+)?)\))\s*(<=|>=|<|>|===|==|!=)\s*-?\d+(\.\d+)?$/.exec(expr);
      assert.ok(m, `${script}: threshold ${key}: "${expr}" is not a k6 threshold expression`);
      const agg = m[1].startsWith('p(') ? 'p' : m[1];
      assert.ok(AGGREGATIONS[type].includes(agg), `${script}: threshold ${key}: ${m[1]} does not apply to a ${type}`);
    }
  }
  // every Trend the scripts create is a time in ms (shown as such by k6)
  for (const [name, m] of Object.entries(metrics)) {
    if (m.type === 'trend') assert.ok(m.isTime, `${script}: Trend ${name} should be created with isTime=true`);
  }
}

test('syntax check passes on every k6 script and the shared module', () => {
  const files = defaultFiles();
  assert.ok(files.length >= 5, 'finds the scripts and lib/protocol.js');
  for (const f of files) assert.deepEqual(checkFile(f), [], f);
});

test('syntax check catches broken scripts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'arq-k6-syntax-'));
  try {
    mkdirSync(join(dir, 'lib'));
    copyFileSync(join(K6_DIR, 'lib', 'protocol.js'), join(dir, 'lib', 'protocol.js'));
    const cases = {
      'unbalanced.js': ['import ws from "k6/ws";', 'export default function () {', '  ws.connect("u", {}, (s) => { s.on("open", () => {} });', '}'],
      'es2021.js': ['let a = null;', 'a ??= 1;', 'export default function () {}'],
      'tla.js': ['await Promise.resolve(1);', 'export default function () {}'],
      'nodebuiltin.js': ['import fs from "node:fs";', 'export default function () {}'],
      'npm.js': ['import WebSocket from "ws";', 'export default function () {}'],
      'missing.js': ['import * as p from "./lib/nope.js";', 'export default function () {}'],
      'require.js': ['const ws = require("k6/ws");', 'export default function () {}'],
      'badkeyword.js': ['export default function () { const let = 1; }'],
      'lib/usesk6.js': ['import { check } from "k6";', 'export const x = 1;'],
    };
    for (const [name, lines] of Object.entries(cases)) {
      const f = join(dir, name);
      writeFileSync(f, lines.join('\n') + '\n');
      const problems = checkFile(f, { name });
      assert.ok(problems.length > 0, `${name} should fail the syntax check`);
      for (const p of problems) assert.match(p, new RegExp('^' + name.replace('.', '\\.') + ':\\d+'), p);
    }
    // a good file in the same place passes (the failures above are real)
    writeFileSync(join(dir, 'good.js'), 'import ws from "k6/ws";\nimport * as p from "./lib/protocol.js";\nexport default function () { ws.connect(p.socketURL("ws://h:1", "t"), {}, () => {}); }\n');
    assert.deepEqual(checkFile(join(dir, 'good.js'), { name: 'good.js' }), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const script of SCRIPTS) {
  test(`${script}: options, scenarios and thresholds are coherent`, async () => {
    const { mod, metrics } = await load(script, { ARQ_TOKEN: 'x.y.z' });
    checkOptions(script, mod, metrics);
    assert.equal(typeof mod.setup, 'function', `${script}: has setup()`);
    const data = mod.setup();
    assert.ok(data && typeof data === 'object', `${script}: setup returns data for the VUs`);
  });

  test(`${script}: setup refuses to run without ARQ_TOKEN`, async () => {
    const { mod } = await load(script, {});
    assert.throws(() => mod.setup(), /ARQ_TOKEN/);
  });

  test(`${script}: bad env values are refused at init`, async () => {
    await assert.rejects(load(script, { ARQ_TOKEN: 'x', VUS: 'lots', SUBS: 'lots', DURATION: 'forever', RAMP: 'soon' }), /must be/);
  });
}

test('storm.js: MODE=rate is a constant arrival rate, unknown modes are refused', async () => {
  const { mod, metrics } = await load('storm.js', { ARQ_TOKEN: 'x', MODE: 'rate', RATE: '500', DURATION: '2m' });
  checkOptions('storm.js', mod, metrics);
  const s = mod.options.scenarios.storm;
  assert.equal(s.executor, 'constant-arrival-rate');
  assert.equal(s.rate, 500);
  assert.equal(s.duration, '120000ms');
  await assert.rejects(load('storm.js', { ARQ_TOKEN: 'x', MODE: 'sideways' }), /MODE/);
});

test('threshold values follow the env overrides', async () => {
  const { mod } = await load('fanout.js', { ARQ_TOKEN: 'x', P99_DELIVERY_MS: '1' });
  assert.deepEqual(mod.options.thresholds.arq_delivery_ms, ['p(99)<1']);
  const d = await load('fanout.js', { ARQ_TOKEN: 'x' });
  assert.deepEqual(d.mod.options.thresholds.arq_delivery_ms, ['p(99)<5']);
});
