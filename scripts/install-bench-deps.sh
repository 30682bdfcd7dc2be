#!/bin/sh
# Installs what `make bench-load` needs beyond Rust and Python 3: h2load (Debian's
# nghttp2-client), an HTTP/1.1 and HTTP/2 load generator with a per-request log.
set -eu
command -v h2load >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "make bench-load needs h2load. Install it (as root: apt-get install nghttp2-client) and run again." >&2
	exit 1
fi
echo "installing: nghttp2-client (h2load)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
