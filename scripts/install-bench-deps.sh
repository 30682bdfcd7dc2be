#!/bin/sh
# Installs what `make bench-load` needs beyond Rust and Python 3: h2load (Debian's
# nghttp2-client), an HTTP/1.1 and HTTP/2 load generator with a per-request log, and valgrind
# (its callgrind counts the instructions per review).
set -eu
missing=""
command -v h2load >/dev/null 2>&1 || missing="$missing nghttp2-client"
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "make bench-load needs:$missing. Install them (as root: apt-get install$missing) and run again." >&2
	exit 1
fi
echo "installing:$missing"
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
