// Module hooks that let node import a k6 script: `k6`, `k6/ws` and
// `k6/metrics` resolve to small stand-ins, so the script's init context runs
// (env parsing, metric creation, `options`) and its exports can be
// inspected by k6/test/scripts.test.mjs. Register with
//   register(new URL('./k6-stub-hooks.mjs', import.meta.url))
// Nothing here opens a socket: the stub ws.connect throws.
//
// Metrics created by the script are recorded in globalThis.__k6stub.metrics
// (name -> {type, isTime}), values added in __k6stub.samples (name ->
// [numbers]), check results in __k6stub.checks ([name, bool]). A connect
// is run by globalThis.__k6sim when set (k6-sim.mjs), else it throws.

const STUBS = {
  k6: `
    const reg = () => (globalThis.__k6stub = globalThis.__k6stub || { metrics: {}, checks: [] });
    export function check(v, sets) {
      let ok = true;
      for (const k of Object.keys(sets)) { const r = !!sets[k](v); reg().checks.push([k, r]); ok = ok && r; }
      return ok;
    }
    export function sleep() {}
    export function group(name, fn) { return fn(); }
    export function fail(msg) { throw new Error(msg); }
    export default { check, sleep, group, fail };
  `,
  'k6/ws': `
    // globalThis.__k6sim (a FakeBus from k6-sim.mjs) runs the socket;
    // without one there are no sockets in the node check.
    export function connect(url, params, fn) {
      if (globalThis.__k6sim) return globalThis.__k6sim.connect(url, params, fn);
      throw new Error('k6/ws stub: no sockets in the node check');
    }
    export default { connect };
  `,
  'k6/metrics': `
    const reg = () => (globalThis.__k6stub = globalThis.__k6stub || { metrics: {}, checks: [] });
    function make(type) {
      return class {
        constructor(name, isTime) {
          if (typeof name !== 'string' || !/^[A-Za-z0-9_]+$/.test(name)) throw new Error('bad metric name ' + name);
          if (reg().metrics[name]) throw new Error('metric ' + name + ' created twice');
          reg().metrics[name] = { type, isTime: !!isTime };
          this.name = name;
        }
        add(v, tags) {
          if (typeof v !== 'number' && typeof v !== 'boolean') throw new Error(this.name + ': add() needs a number or boolean');
          if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(this.name + ': add() of ' + v);
          if (tags !== undefined && (tags === null || typeof tags !== 'object')) throw new Error(this.name + ': tags must be an object');
          const s = reg();
          s.samples = s.samples || {};
          (s.samples[this.name] = s.samples[this.name] || []).push(Number(v));
        }
      };
    }
    export const Counter = make('counter');
    export const Gauge = make('gauge');
    export const Rate = make('rate');
    export const Trend = make('trend');
    export default { Counter, Gauge, Rate, Trend };
  `,
};

export async function resolve(specifier, context, next) {
  if (specifier === 'k6' || specifier.startsWith('k6/')) {
    if (!Object.prototype.hasOwnProperty.call(STUBS, specifier)) {
      throw new Error(`k6-stub-hooks: no stand-in for "${specifier}" (add one to k6/tools/k6-stub-hooks.mjs)`);
    }
    return { url: 'k6stub:' + specifier, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url.startsWith('k6stub:')) {
    return { format: 'module', source: STUBS[url.slice('k6stub:'.length)], shortCircuit: true };
  }
  return next(url, context);
}
