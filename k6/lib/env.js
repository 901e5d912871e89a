// Environment settings shared by the k6 scripts: `k6 run -e NAME=value`.
// Plain ES2020, no imports; __ENV is k6's (the node checks stub it).

// env returns __ENV[name], or def when it is unset or empty.
export function env(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

// envInt returns a non-negative integer setting.
export function envInt(name, def) {
  const n = parseInt(env(name, String(def)), 10);
  if (!(n >= 0)) throw new Error(name + ' must be a non-negative integer');
  return n;
}

// envMs returns a duration setting ("250ms", "30s", "5m", "1h"; a bare
// number is seconds) in milliseconds.
export function envMs(name, def) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(env(name, def)));
  if (!m) throw new Error(name + ' must be a duration like 30s');
  const mult = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] || 's'];
  return Math.round(parseFloat(m[1]) * mult);
}
