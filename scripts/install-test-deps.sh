#!/bin/sh
# Installs what `make test` needs beyond the Rust toolchain, from Debian's packages: dockerd and
# the docker client (docker.io) for the test engine the job tests (tests/jobs.rs) run on,
# debootstrap to build their images offline (scripts/test-images.sh), openssl (the tcp-tls
# sidecar script), musl-tools for the injector's own static image (scripts/image.sh), and podman
# for the userns pods.
set -eu
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
# musl-gcc compiles ring's C for the static binary of the image (scripts/image.sh); strip and
# readelf (binutils) shrink and check it.
command -v musl-gcc >/dev/null 2>&1 || need="$need musl-tools"
command -v readelf >/dev/null 2>&1 || need="$need binutils"
# podman and runc run the userns isolation's pods in a user namespace of their own (tests/jobs.rs,
# tests/support/podman.rs): Docker cannot give one container its own; uidmap brings newuidmap.
command -v podman >/dev/null 2>&1 || need="$need podman"
command -v runc >/dev/null 2>&1 || need="$need runc"
command -v newuidmap >/dev/null 2>&1 || need="$need uidmap"
# podman's pod infra (pause) container runs catatonit.
command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || need="$need catatonit"
# --userns=auto takes each pod's id range from the `containers` entries.
if [ "$(id -u)" = 0 ]; then
	for f in /etc/subuid /etc/subgid; do
		grep -q '^containers:' "$f" 2>/dev/null || echo 'containers:2147483647:2147483648' >>"$f"
	done
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
	# PyYAML reads the inject output the way kubectl does (YAML 1.1), in tests/cli.rs.
	python3 -m pip install --quiet 'PyYAML>=6,<7'
fi
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "make test needs:$need. Install them (as root: apt-get install$need) and run again." >&2
	exit 1
fi
echo "installing:$need"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
