#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine with Go:
# protoc (Debian's protobuf-compiler, the pinned 3.21.12 that generated
# pb/*.pb.go) and node + npm (the k6 script checks). Idempotent; does
# nothing when everything is present.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

ver=$(protoc --version | awk '{print $2}')
if [ "$ver" != "3.21.12" ]; then
  echo "deps: protoc $ver found; pb/*.pb.go were generated with 3.21.12 (Debian bookworm)." >&2
  echo "deps: proto-check compares the header line too; install protobuf-compiler 3.21.12." >&2
fi
echo "deps: ok (protoc $ver, $(go version | awk '{print $3}'), node $(node --version))"
