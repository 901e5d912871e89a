#!/usr/bin/env bash
# js-check: tests of the JavaScript client (clients/js) and the browser
# end-to-end test (e2e in clients/js/test/, headless Chromium), run by
# `make test-node`. Run from anywhere:
#
#   bash scripts/js-check.sh
#
#  1. installs clients/js/node_modules (ws, playwright-core: dev dependencies
#     only, pinned in clients/js/package-lock.json) with `npm ci` when
#     missing or older than the lockfile;
#  2. node --test clients/js/test/ against a live `arq serve` (.bin/arq,
#     built if absent; ARQ_BIN overrides). The browser test needs
#     /usr/bin/chromium (scripts/deps.sh installs it) and saves screenshots
#     to clients/js/test-artifacts/ (not committed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v node >/dev/null || { echo "js-check: node is required (node >= 20)" >&2; exit 1; }
if [ ! -d clients/js/node_modules ] || [ ! -f clients/js/node_modules/.package-lock.json ] ||
	[ clients/js/package-lock.json -nt clients/js/node_modules/.package-lock.json ]; then
	echo "== js-check: npm ci --prefix clients/js"
	npm ci --prefix clients/js --no-audit --no-fund --loglevel=error
fi

echo "== js-check: node tests (clients/js/test/)"
node --test --test-reporter=spec --test-concurrency=1 clients/js/test/*.test.mjs

echo "== js-check: ok"
