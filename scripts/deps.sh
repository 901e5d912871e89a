#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine with Go:
# protoc (Debian's protobuf-compiler, the pinned 3.21.12 that generated
# pb/*.pb.go), node + npm (the k6 script checks), chromium (the browser
# test) and redis-server when
# neither valkey-server nor redis-server is on PATH (the brain's Valkey
# store tests start a private one on a free port; Debian bookworm has no
# valkey package). Idempotent; does nothing when everything is present.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v curl >/dev/null 2>&1 || need+=(curl) # docs/API.md's examples run in a test
# the browser test of the demo and admin pages (scripts/js-check.sh) drives
# Debian's chromium with playwright-core (clients/js/package.json)
[ -x /usr/bin/chromium ] || need+=(chromium)
redis_new=0
if ! command -v valkey-server >/dev/null 2>&1 && ! command -v redis-server >/dev/null 2>&1; then
  need+=(redis-server)
  redis_new=1
fi

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  if [ "$redis_new" -eq 1 ]; then
    # The package starts a system redis on 6379; the tests never use it
    # (internal/valkeytest starts its own), so stop it where we can.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
      $SUDO service redis-server stop >/dev/null 2>&1 || true
    fi
  fi
fi

ver=$(protoc --version | awk '{print $2}')
if [ "$ver" != "3.21.12" ]; then
  echo "deps: protoc $ver found; pb/*.pb.go were generated with 3.21.12 (Debian bookworm)." >&2
  echo "deps: proto-check compares the header line too; install protobuf-compiler 3.21.12." >&2
fi
kv=$(command -v valkey-server || command -v redis-server)
echo "deps: ok (protoc $ver, $(go version | awk '{print $3}'), node $(node --version), $($kv --version | awk '{print $1, $3}'))"
