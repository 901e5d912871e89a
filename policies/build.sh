#!/usr/bin/env bash
# build.sh rebuilds the example policies (policies/src/*.wat -> policies/*.wasm)
# and the hostile test modules of the policy package
# (policy/testdata/*.wat -> policy/testdata/*.wasm) with wabt's wat2wasm.
#
#   policies/build.sh           rebuild every module
#   policies/build.sh --check   rebuild into a temp dir and fail if a committed
#                               .wasm differs from its source
#
# Needs wat2wasm (Debian: apt-get install -y wabt). The built .wasm files are
# committed, so tests and the gateway never need wabt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check=0
if [[ ${1:-} == --check ]]; then check=1; fi

if ! command -v wat2wasm >/dev/null 2>&1; then
	echo "build.sh: wat2wasm not found (apt-get install -y wabt)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# build SRC_DIR OUT_DIR: one OUT_DIR/NAME.wasm per SRC_DIR/NAME.wat.
build() {
	local src=$1 out=$2 f name
	for f in "$src"/*.wat; do
		name=$(basename "${f%.wat}")
		wat2wasm "$f" -o "$tmp/$name.wasm"
		if ((check)); then
			if ! cmp -s "$tmp/$name.wasm" "$out/$name.wasm"; then
				echo "build.sh: $out/$name.wasm is stale: run policies/build.sh" >&2
				status=1
			fi
		else
			mv "$tmp/$name.wasm" "$out/$name.wasm"
			echo "built ${out#"$root"/}/$name.wasm"
		fi
	done
}

build "$root/policies/src" "$root/policies"
build "$root/policy/testdata" "$root/policy/testdata"

# The PolicyRequest parser is copied into every example; keep the copies equal.
parser() { sed -n '/;; ---- PolicyRequest parsing/,/;; ---- end of PolicyRequest parsing/p' "$1"; }
first=""
for f in "$root"/policies/src/*.wat; do
	if [[ -z $first ]]; then
		first=$f
	elif ! diff -q <(parser "$first") <(parser "$f") >/dev/null; then
		echo "build.sh: the parser block of $f differs from $first" >&2
		status=1
	fi
done
exit $status
