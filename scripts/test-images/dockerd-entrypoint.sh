#!/bin/sh
# The test dind image's entrypoint: what the docker:dind image's dockerd-entrypoint.sh does when
# it is given an explicit `dockerd ...` command line (the only form the injector uses), written
# for a Debian image: the pid file removed, `dind docker-init -- dockerd ...` run. No default listeners, no certificates: with `dockerd` first the official
# entrypoint adds neither.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	# The official image would add `--host=tcp://0.0.0.0:2375` (or 2376 with TLS) here. The
	# injector never relies on that, so this stand-in refuses instead of imitating it.
	echo "dockerd-entrypoint.sh (test image): expected an explicit 'dockerd ...' command line, got: ${*:-nothing}" >&2
	exit 64
fi

if [ "$1" != dockerd ]; then
	exec "$@"
fi

# A daemon stopped uncleanly leaves its pid file; dockerd then refuses to start.
find /run /var/run -iname 'docker*.pid' -delete 2>/dev/null || :

# iptables: nf_tables (Debian's default) when the kernel has it, else the legacy backend, as the
# official image falls back to xtables-legacy where nf_tables is missing. The choice is logged.
if iptables -t nat -nL >/dev/null 2>&1; then
	echo "dockerd-entrypoint.sh (test image): iptables backend: $(iptables --version)" >&2
elif iptables-legacy -t nat -nL >/dev/null 2>&1; then
	PATH="/usr/local/lib/iptables-legacy:$PATH"
	export PATH
	echo "dockerd-entrypoint.sh (test image): nf_tables unusable, iptables backend: $(iptables --version)" >&2
else
	echo "dockerd-entrypoint.sh (test image): neither iptables backend works here; dockerd will say why" >&2
fi

# docker-init (tini) as PID 1, as the official entrypoint inserts it for `dockerd`: it reaps the
# containerd-shim processes of finished containers, which dockerd as PID 1 leaves as zombies
# (docker-library/docker#318; README fact 11 in tests/fixtures/apiserver/).
exec /usr/local/bin/dind docker-init -- "$@"
