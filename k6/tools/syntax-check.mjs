#!/usr/bin/env node
// Syntax and import check for the k6 scenarios and their shared module.
//
//   node k6/tools/syntax-check.mjs [FILE...]     (default: k6/*.js k6/lib/*.js)
//
// k6 cannot run here, and `node --check FILE` is not enough: it would treat
// a .js file by the nearest package.json and never look at what a k6 script
// may import. Every file is therefore checked three ways:
//
//  1. acorn parses it as an ES module with ecmaVersion 2020, the syntax k6's
//     JavaScript runtime is known to accept; a syntax error, or newer syntax
//     (`??=`, class static blocks, top-level await, ...), is reported as
//     FILE:LINE:COL.
//  2. V8 parses it too (`node --input-type=module --check`, source on
//     stdin, where module imports are parsed but never resolved), so nothing
//     acorn accepts can still be refused by a real engine.
//  3. Imports: a scenario may import only `k6`, `k6/...` and relative files
//     that exist; the shared module in k6/lib/ may import only relative
//     files (it must load in both k6 and node). `require()`, `import()` and
//     node built-ins (`node:...`, `fs`, ...) are refused everywhere.
//
// Exit status 1 when any file fails; each problem is printed on stderr.

import { parse } from 'acorn';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const K6_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ECMA_VERSION = 2020;

// defaultFiles lists the k6 scripts and the shared module(s).
export function defaultFiles() {
  const files = [];
  for (const d of [K6_DIR, join(K6_DIR, 'lib')]) {
    for (const f of readdirSync(d).sort()) {
      if (f.endsWith('.js')) files.push(join(d, f));
    }
  }
  // the frame code shared with the JavaScript client (k6/lib/protocol.js imports it)
  files.push(join(K6_DIR, '..', 'clients', 'js', 'frames.js'));
  return files;
}

// walk calls fn on every AST node under node.
function walk(node, fn) {
  if (!node || typeof node.type !== 'string') return;
  fn(node);
  for (const key of Object.keys(node)) {
    if (key === 'loc' || key === 'start' || key === 'end') continue;
    const v = node[key];
    if (Array.isArray(v)) {
      for (const c of v) walk(c, fn);
    } else if (v && typeof v === 'object' && typeof v.type === 'string') {
      walk(v, fn);
    }
  }
}

// checkFile returns a list of "FILE:LINE:COL: message" problems.
export function checkFile(file, opts = {}) {
  const name = opts.name || relative(process.cwd(), file) || file;
  const src = readFileSync(file, 'utf8');
  const problems = [];
  let ast;
  try {
    ast = parse(src, { ecmaVersion: ECMA_VERSION, sourceType: 'module', locations: true });
  } catch (e) {
    const loc = e.loc ? `${e.loc.line}:${e.loc.column + 1}` : '?:?';
    problems.push(`${name}:${loc}: acorn (ES${ECMA_VERSION} module): ${e.message.replace(/ \(\d+:\d+\)$/, '')}`);
  }

  const v8 = spawnSync(process.execPath, ['--input-type=module', '--check'], {
    input: src,
    encoding: 'utf8',
    timeout: 30000,
  });
  if (v8.status !== 0) {
    const msg = (v8.stderr || '').split('\n').find((l) => /Error/.test(l)) || `exit ${v8.status}`;
    const line = /\[stdin\]:(\d+)/.exec(v8.stderr || '');
    problems.push(`${name}:${line ? line[1] : '?'}: V8 (node --input-type=module --check): ${msg.trim()}`);
  }
  if (!ast) return problems;

  const inLib = dirname(resolve(file)).split(sep).pop() === 'lib' || resolve(file).endsWith(join('clients', 'js', 'frames.js'));
  const at = (n) => `${name}:${n.loc.start.line}:${n.loc.start.column + 1}`;
  walk(ast, (n) => {
    let spec = null;
    if (n.type === 'ImportDeclaration' || ((n.type === 'ExportNamedDeclaration' || n.type === 'ExportAllDeclaration') && n.source)) {
      spec = n.source.value;
    } else if (n.type === 'ImportExpression') {
      problems.push(`${at(n)}: dynamic import() is not supported by k6 scripts here`);
      return;
    } else if (n.type === 'CallExpression' && n.callee.type === 'Identifier' && n.callee.name === 'require') {
      problems.push(`${at(n)}: require() is not available in k6 ES modules`);
      return;
    } else {
      return;
    }
    if (spec.startsWith('./') || spec.startsWith('../')) {
      if (!spec.endsWith('.js')) problems.push(`${at(n)}: relative import "${spec}" must name the .js file`);
      else if (!existsSync(resolve(dirname(file), spec))) problems.push(`${at(n)}: import "${spec}" does not exist`);
      return;
    }
    if (spec === 'k6' || spec.startsWith('k6/')) {
      if (inLib) problems.push(`${at(n)}: the shared module must not import "${spec}" (it must also load in node)`);
      return;
    }
    problems.push(`${at(n)}: import "${spec}" is neither k6 nor a relative file (node built-ins and npm packages do not exist in k6)`);
  });
  return problems;
}

function main(argv) {
  const files = argv.length ? argv.map((f) => resolve(f)) : defaultFiles();
  let bad = 0;
  for (const f of files) {
    const problems = checkFile(f);
    if (problems.length) {
      bad++;
      for (const p of problems) console.error(p);
    } else {
      console.log(`ok   ${relative(process.cwd(), f)}`);
    }
  }
  if (bad) {
    console.error(`syntax-check: ${bad} of ${files.length} file(s) failed`);
    process.exit(1);
  }
  console.log(`syntax-check: ${files.length} file(s) ok (ES${ECMA_VERSION} module, V8, imports)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2));
}
