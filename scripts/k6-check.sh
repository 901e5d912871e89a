#!/usr/bin/env bash
# k6-check: checks the k6 scenarios without k6 (which cannot be installed
# here). Run from the repository root:
#
#   bash scripts/k6-check.sh
#
#  1. installs k6/node_modules (acorn, ws; pinned in k6/package-lock.json)
#     with `npm ci` when missing or older than the lockfile;
#  2. syntax/import check of k6/*.js and k6/lib/*.js (k6/tools/syntax-check.mjs:
#     acorn as an ES2020 module + V8's parser + allowed imports);
#  3. node tests in k6/test/: protocol module unit tests, static checks of
#     each script's options/thresholds, the scripts' VU code run against an
#     in-process protocol simulator, and a live contract test of the shared
#     module against `arq serve` (pub/sub, errors, tenants, and presence with
#     serve's in-process brain; builds .bin/arq if absent).
#
# Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v node >/dev/null || { echo "k6-check: node is required (node >= 20)" >&2; exit 1; }
command -v npm >/dev/null || { echo "k6-check: npm is required" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
	echo "k6-check: node >= 20 is required, found $(node --version)" >&2
	exit 1
fi

# npm ci when node_modules is absent or stale (npm writes
# node_modules/.package-lock.json on every install).
if [ ! -d k6/node_modules ] || [ ! -f k6/node_modules/.package-lock.json ] ||
	[ k6/package-lock.json -nt k6/node_modules/.package-lock.json ]; then
	echo "== k6-check: npm ci --prefix k6"
	npm ci --prefix k6 --no-audit --no-fund --loglevel=error
fi

echo "== k6-check: syntax"
node k6/tools/syntax-check.mjs

echo "== k6-check: node tests (k6/test/)"
node --test --test-reporter=spec k6/test/

echo "== k6-check: ok"
