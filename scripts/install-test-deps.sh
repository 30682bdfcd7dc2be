#!/bin/sh
# Installs what `make test` needs beyond the Rust toolchain, from Debian's packages:
# dockerd and the docker client (docker.io) for the real-daemon test, openssl (the tcp-tls
# sidecar script), and gcc with a static libc (the FROM scratch test image).
set -eu
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need="$need libc6-dev"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "make test needs:$need. Install them (as root: apt-get install$need) and run again." >&2
	exit 1
fi
echo "installing:$need"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
