#!/bin/sh
# The container engine the pod-shaped job tests (tests/jobs.rs) run on: Debian's dockerd, owned
# by the tests, with its own data root, exec root, pidfile and unix socket under one cache
# directory, so it never touches a dockerd the machine may run and its images (the test images,
# built once by scripts/test-images.sh) survive between runs.
#
#   sh scripts/test-engine.sh start   start it unless it already answers; prints the socket
#   sh scripts/test-engine.sh stop    stop it (images stay in the data root)
#   sh scripts/test-engine.sh socket  print the socket path
#
# It leaves the host's network alone: no default bridge, no iptables rules, no ip_forward
# change. Each sandbox gets an `--internal` bridge network (no default route in the pod); the
# nested daemon's bridge and rules live in the pod's own network namespace. DIND_INJECTOR_ENGINE_DIR moves the cache (default
# /var/cache/dind-injector/engine).
set -eu
dir=${DIND_INJECTOR_ENGINE_DIR:-/var/cache/dind-injector/engine}
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"

answers() {
	DOCKER_HOST="unix://$sock" docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

case "${1:-start}" in
socket)
	echo "$sock"
	;;
start)
	if answers; then
		echo "$sock"
		exit 0
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "test-engine: the test engine needs root (dockerd)" >&2
		exit 1
	fi
	command -v dockerd >/dev/null 2>&1 || { echo "test-engine: dockerd is not installed (make test-deps installs Debian's docker.io)" >&2; exit 1; }
	mkdir -p "$dir/data" "$dir/exec"
	# A dead daemon's pidfile would stop the new one from starting. Dead includes a killed daemon
	# not yet reaped (a zombie answers kill -0) and a pid reused by another program.
	if [ -s "$pidfile" ]; then
		old=$(cat "$pidfile")
		state=$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null || true)
		comm=$(cat "/proc/$old/comm" 2>/dev/null || true)
		if [ "$comm" != dockerd ] || [ "$state" = Z ]; then
			rm -f "$pidfile"
			# The killed daemon's own containerd would make the new one wait for it and time out.
			pkill -KILL -f "containerd.*$dir/exec" 2>/dev/null || true
			sleep 1
		fi
	fi
	rm -f "$sock"
	# Detached from the caller (its own session), so it outlives `make` and the test process.
	setsid dockerd \
		--data-root="$dir/data" \
		--exec-root="$dir/exec" \
		--pidfile="$pidfile" \
		--host="unix://$sock" \
		--bridge=none --iptables=false --ip-masq=false --ip-forward=false \
		--cgroup-parent=dind-injector-test \
		--storage-driver=overlay2 \
		</dev/null >>"$dir/dockerd.log" 2>&1 &
	i=0
	until answers; do
		i=$((i + 1))
		if [ "$i" -ge 120 ]; then
			echo "test-engine: dockerd did not answer on $sock within 60s; the end of $dir/dockerd.log:" >&2
			tail -n 30 "$dir/dockerd.log" >&2
			exit 1
		fi
		sleep 0.5
	done
	echo "$sock"
	;;
stop)
	if [ -s "$pidfile" ]; then
		pid=$(cat "$pidfile")
		kill -TERM "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 60 ]; do
			i=$((i + 1))
			sleep 0.5
		done
	fi
	;;
*)
	echo "usage: $0 start|stop|socket" >&2
	exit 2
	;;
esac
