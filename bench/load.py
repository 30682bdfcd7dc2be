#!/usr/bin/env python3
"""The load benchmark (`make bench-load`): the release `dind-injector serve` and the floor
(`examples/floor.rs`, the same TLS and HTTP stack answering only the uid) driven over HTTPS by
h2load with keep-alive, HTTP/1.1 and HTTP/2, at concurrency 1, 16 and 64, for the GitLab and
Buildkite review fixtures and a 50-container pod.

For each run the server is started afresh (so its peak RSS is that run's), warmed up, then
measured for --seconds: requests per second, p50/p99/p99.9 latency (h2load's per-request log),
the server's CPU time per review (utime+stime from /proc/PID/stat, before and after, divided by
the requests answered) and its peak RSS (VmHWM). Then p99 at a fixed 1,000 reviews/s (open
loop: h2load --rps), and how soon /readyz answers 200 after the process starts.

The injector logs as in production: one JSON line per review (info), to a file.
Client and server share the machine: the ratio to the floor is the figure that carries over.

usage: load.py --server BIN --floor BIN [--alloc BIN] [--seconds 4] [--report FILE] [--readme README.md]
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LABELS = "dind-injector.io/injection=enabled,pod-security.kubernetes.io/enforce=privileged"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The targets of issue 5.
TARGET_RATIO = 1.5  # CPU per review within 1.5x of the floor (GitLab fixture)
TARGET_P99_MS = 2.0  # p99 under 2 ms at 1,000 reviews/s, open loop
TARGET_RSS_MIB = 30.0  # peak RSS under load
TARGET_READY_MS = 100.0  # ready within 100 ms of start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def http_status(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).decode("latin-1")
            return int(head.split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Server:
    """One server process: the injector (readiness from /readyz) or the floor (its first line)."""

    def __init__(self, kind, binary, certs, workdir, log_level="info"):
        self.kind = kind
        self.port = free_port()
        self.health = free_port()
        self.log = open(workdir / f"{kind.replace('+', '-')}.log", "ab")
        if kind == "injector":
            config = workdir / "config.yaml"
            # shutdownDelay 0s: the benchmark stops it at once; everything else is the default.
            config.write_text("server:\n  shutdownDelay: 0s\n")
            cmd = [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--health-listen", f"127.0.0.1:{self.health}",
                   "--tls-cert", str(certs / "tls.crt"), "--tls-key", str(certs / "tls.key"),
                   "--config", str(config), "--static-namespace-labels", LABELS, "--log-format", "json"]
        else:
            cmd = [str(binary), "--listen", f"127.0.0.1:{self.port}",
                   "--tls-cert", str(certs / "tls.crt"), "--tls-key", str(certs / "tls.key")]
            if kind == "floor+decision":
                cmd.append("--decide")
        env = dict(os.environ, RUST_LOG=log_level)
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log if kind == "injector" else subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.ready_ms = None
        deadline = started + 10
        if kind == "injector":
            while time.monotonic() < deadline:
                if http_status(self.health, "/readyz") == 200:
                    self.ready_ms = (time.monotonic() - started) * 1000
                    break
                if self.proc.poll() is not None:
                    break
                time.sleep(0.001)
        else:
            line = self.proc.stdout.readline().decode()
            if line.startswith("listening on"):
                self.ready_ms = (time.monotonic() - started) * 1000
        if self.ready_ms is None:
            self.stop()
            sys.exit(f"bench: the {kind} did not start; see {workdir / (kind + '.log')}")

    def url(self):
        return f"https://127.0.0.1:{self.port}/mutate"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def h2load(url, body, http, concurrency, seconds=None, requests=None, rps=None, log=None):
    cmd = ["h2load", url, "-c", str(concurrency), "-t", "1", "-d", str(body),
           "-H", "content-type: application/json"]
    # One request at a time per connection (h2load's --rps with more streams per connection
    # adds a millisecond or two of its own, floor included).
    cmd += ["-m", "1"]
    if http == "1.1":
        cmd.append("--h1")
    if seconds is not None:
        cmd += ["-D", f"{seconds:g}"]
    if requests is not None:
        cmd += ["-n", str(requests)]
    if rps is not None:
        cmd += [f"--rps={rps}"]
    if log is not None:
        cmd += ["--log-file", str(log)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=(seconds or 30) + 60)
    text = out.stdout + out.stderr
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if not (m and codes and rate):
        sys.exit(f"bench: cannot read h2load's output ({' '.join(cmd)}):\n{text}")
    total, started, done, succeeded, failed, errored, timeout = (int(m.group(i)) for i in range(1, 8))
    ok2xx = int(codes.group(1))
    # Requests still in flight when a timed run ends are neither done nor errors.
    return {
        "h2load": dict(total=total, started=started, done=done, succeeded=succeeded, failed=failed,
                       errored=errored, timeout=timeout, status_2xx=ok2xx),
        "done": done,
        "ok": ok2xx,
        "errors": failed + errored + timeout + (succeeded - ok2xx),
        "rps": float(rate.group(3)),
    }


def quantiles(log):
    durations = sorted(int(line.split("\t")[2]) for line in pathlib.Path(log).read_text().splitlines() if line.count("\t") >= 2)
    if not durations:
        return {}
    pick = lambda q: durations[min(len(durations) - 1, max(0, int(len(durations) * q + 0.5) - 1))] / 1000.0
    return {"n": len(durations), "p50": pick(0.50), "p99": pick(0.99), "p999": pick(0.999), "max": durations[-1] / 1000.0}


def measure(kind, binary, certs, workdir, body, http, concurrency, seconds, log_level="info"):
    server = Server(kind, binary, certs, workdir, log_level)
    try:
        h2load(server.url(), body, http, concurrency, requests=max(500, 50 * concurrency))  # warm-up
        log = workdir / "requests.log"
        log.unlink(missing_ok=True)
        before = cpu_seconds(server.proc.pid)
        result = h2load(server.url(), body, http, concurrency, seconds=seconds, log=log)
        after = cpu_seconds(server.proc.pid)
        result.update(quantiles(log))
        result["cpu_us"] = (after - before) / max(1, result["ok"]) * 1e6
        result["rss_mib"] = peak_rss_mib(server.proc.pid)
        result["ready_ms"] = server.ready_ms
        return result
    finally:
        server.stop()


OPEN_LOOP = [
    # (name, connections, requests per second per connection)
    ("even: 1 connection, a review every 1 ms", 1, 1000),
    ("bursts: 10 connections in step, 10 reviews at once every 10 ms", 10, 100),
]


def open_loop(binary, certs, workdir, body, http, connections, rps, seconds):
    server = Server("injector", binary, certs, workdir)
    try:
        h2load(server.url(), body, http, connections, requests=1000)  # warm-up
        log = workdir / "requests.log"
        log.unlink(missing_ok=True)
        result = h2load(server.url(), body, http, connections, seconds=seconds, rps=rps, log=log)
        result.update(quantiles(log))
        result["rss_mib"] = peak_rss_mib(server.proc.pid)
        result["ready_ms"] = server.ready_ms
        return result
    finally:
        server.stop()


def scaling(alloc_binary):
    """Time per review (criterion's mutate_review_by_containers, when `cargo bench` has run) and
    allocations per review (examples/alloc_by_pod_size.rs) by pod size."""
    counts = {}
    if alloc_binary:
        out = subprocess.run([alloc_binary], capture_output=True, text=True, timeout=300, check=True).stdout
        for line in out.splitlines():
            row = json.loads(line)
            counts[row["containers"]] = row
    rows = []
    for n in [1, 10, 50, 100, 200]:
        est = ROOT / f"target/criterion/mutate_review_by_containers/{n}/new/estimates.json"
        time_us = None
        if est.exists():
            time_us = json.loads(est.read_text())["median"]["point_estimate"] / 1000.0
        rows.append((n, time_us, counts.get(n)))
    return rows


def large_review(n=50):
    """The GitLab review with `n` job containers shaped like its `build` (benches/decision.rs)."""
    review = json.loads((ROOT / "tests/fixtures/reviews/gitlab.json").read_text())
    build = review["request"]["object"]["spec"]["containers"][0]
    review["request"]["object"]["spec"]["containers"] = [dict(build, name=f"build-{i}") for i in range(n)]
    return review


def machine():
    model = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--report", default=str(ROOT / "target/bench-load/report.md"))
    ap.add_argument("--alloc", help="examples/alloc_by_pod_size, for the scaling table")
    ap.add_argument("--readme", help="also write the report (and bench/notes.md) between the load-bench markers of this file")
    args = ap.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench: h2load is missing (scripts/install-bench-deps.sh installs it)")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="dind-bench-"))
    certs = workdir / "certs"
    subprocess.run([args.server, "certs", "--out", str(certs)], check=True, capture_output=True)
    bodies = {}
    for name in ["gitlab", "buildkite"]:
        bodies[name] = ROOT / f"tests/fixtures/reviews/{name}.json"
    bodies["50 containers"] = workdir / "large.json"
    bodies["50 containers"].write_text(json.dumps(large_review(50)))

    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for fixture, body in bodies.items():
        for http in ["1.1", "2"]:
            for c in [1, 16, 64]:
                ours = measure("injector", args.server, certs, workdir, body, http, c, args.seconds)
                floor = measure("floor", args.floor, certs, workdir, body, http, c, args.seconds)
                ours["ratio"] = ours["cpu_us"] / floor["cpu_us"] if floor["cpu_us"] else None
                rows.append((fixture, http, c, ours, floor))
                print(f"  {fixture:14} HTTP/{http:3} c={c:<3} {ours['rps']:8.0f} req/s  p99 {fmt(ours.get('p99'))} ms  "
                      f"CPU {ours['cpu_us']:.0f} us/review (floor {floor['cpu_us']:.0f}, x{fmt(ours['ratio'])})  "
                      f"RSS {ours['rss_mib']:.1f} MiB  errors {ours['errors']}", flush=True)
    # The cost of the log line: GitLab over HTTP/2 at 16 with logging off.
    quiet = measure("injector", args.server, certs, workdir, bodies["gitlab"], "2", 16, args.seconds, log_level="warn")
    gitlab_floor = next(f for (fx, h, c, _, f) in rows if (fx, h, c) == ("gitlab", "2", 16))
    quiet["ratio"] = quiet["cpu_us"] / gitlab_floor["cpu_us"]
    decided = measure("floor+decision", args.floor, certs, workdir, bodies["gitlab"], "2", 16, args.seconds)
    gitlab_ours = next(o for (fx, h, c, o, _) in rows if (fx, h, c) == ("gitlab", "2", 16))
    open_seconds = max(5, 2 * args.seconds)
    opens = {}
    for name, conns, rps in OPEN_LOOP:
        for http in ["1.1", "2"]:
            r = opens[(name, http)] = open_loop(args.server, certs, workdir, bodies["gitlab"], http, conns, rps, open_seconds)
            print(f"  open loop 1000/s, {name}, HTTP/{http}: {r['rps']:.0f} req/s, p50 {fmt(r.get('p50'))} ms, "
                  f"p99 {fmt(r.get('p99'))} ms, p99.9 {fmt(r.get('p999'))} ms, errors {r['errors']}", flush=True)
    sizes = scaling(args.alloc)

    # Targets.
    gitlab_ratios = [o["ratio"] for (fx, _, _, o, _) in rows if fx == "gitlab"]
    worst_ratio = max(gitlab_ratios)
    even = OPEN_LOOP[0][0]
    worst_even_p99 = max(r.get("p99", float("inf")) for (name, _), r in opens.items() if name == even)
    worst_burst_p99 = max(r.get("p99", float("inf")) for (name, _), r in opens.items() if name != even)
    errors = sum(o["errors"] for (*_, o, _) in rows) + sum(r["errors"] for r in opens.values()) + quiet["errors"]
    peak_rss = max([o["rss_mib"] for (*_, o, _) in rows] + [r["rss_mib"] for r in opens.values()])
    ready = [o["ready_ms"] for (*_, o, _) in rows] + [r["ready_ms"] for r in opens.values()]
    saturation = {f"HTTP/{h}": o.get("p99") for (fx, h, c, o, _) in rows if fx == "gitlab" and c == 64}
    verdict = lambda ok: "met" if ok else "MISSED"
    targets = [
        (f"CPU per review within {TARGET_RATIO}x of the floor (GitLab, every row)", f"worst x{worst_ratio:.2f}", worst_ratio <= TARGET_RATIO),
        (f"p99 under {TARGET_P99_MS:g} ms at 1,000 reviews/s, open loop, evenly spaced", ", ".join(f"HTTP/{h} {fmt(r.get('p99'))} ms" for (n, h), r in opens.items() if n == even), worst_even_p99 < TARGET_P99_MS),
        (f"the same, in bursts of 10", ", ".join(f"HTTP/{h} {fmt(r.get('p99'))} ms" for (n, h), r in opens.items() if n != even), worst_burst_p99 < TARGET_P99_MS),
        ("no error at any concurrency", f"{errors} errors", errors == 0),
        (f"peak RSS under {TARGET_RSS_MIB:g} MiB under load", f"max {peak_rss:.1f} MiB", peak_rss < TARGET_RSS_MIB),
        (f"ready within {TARGET_READY_MS:g} ms of start", f"max {max(ready):.1f} ms over {len(ready)} starts", max(ready) < TARGET_READY_MS),
    ]

    lines = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}, by `make bench-load` "
        f"({args.seconds:g} s per run after a warm-up; h2load on the same 2 cores; other builds may have been running).",
        "The injector logs one JSON line per review to a file, as in production. CPU is the server's utime+stime per review, "
        "including TLS and HTTP; the floor is `examples/floor.rs` (same TLS and HTTP stack, parses the review, echoes the uid).",
        "",
        "| pod | HTTP | conc. | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/review | floor µs/review | ratio | peak RSS MiB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fixture, http, c, o, f in rows:
        lines.append(f"| {fixture} | {http} | {c} | {o['rps']:.0f} | {fmt(o.get('p50'))} | {fmt(o.get('p99'))} | {fmt(o.get('p999'))} | "
                     f"{o['cpu_us']:.0f} | {f['cpu_us']:.0f} | {fmt(o['ratio'])} | {o['rss_mib']:.1f} | {o['errors']} |")
    lines.append(f"| gitlab, logging off (`RUST_LOG=warn`) | 2 | 16 | {quiet['rps']:.0f} | {fmt(quiet.get('p50'))} | {fmt(quiet.get('p99'))} | "
                 f"{fmt(quiet.get('p999'))} | {quiet['cpu_us']:.0f} | {gitlab_floor['cpu_us']:.0f} | {fmt(quiet['ratio'])} | {quiet['rss_mib']:.1f} | {quiet['errors']} |")
    f0 = gitlab_floor["cpu_us"]
    lines += ["", "Where the CPU goes (GitLab, HTTP/2, 16 connections; each step adds to the one before):", "",
              "| server | CPU µs/review | x floor |", "|---|---:|---:|",
              f"| the floor: TLS, HTTP/2, read and parse the review, answer the uid | {f0:.0f} | 1.00 |",
              f"| the floor answering with the injector's decision (`floor --decide`: `webhook::mutate`) | {decided['cpu_us']:.0f} | {decided['cpu_us'] / f0:.2f} |",
              f"| the injector with logging off (adds axum routing, metrics, spans, timeouts) | {quiet['cpu_us']:.0f} | {quiet['cpu_us'] / f0:.2f} |",
              f"| the injector as deployed (adds one JSON log line per review) | {gitlab_ours['cpu_us']:.0f} | {gitlab_ours['cpu_us'] / f0:.2f} |"]
    lines += ["", f"Open loop, GitLab, 1,000 reviews/s for {open_seconds} s (h2load `--rps`; latency from each request's start, "
              "so a request held behind a slow one on its connection is counted from when it went out):", "",
              "| arrivals | HTTP | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (name, http), r in opens.items():
        lines.append(f"| {name} | {http} | {r['rps']:.0f} | {fmt(r.get('p50'))} | {fmt(r.get('p99'))} | {fmt(r.get('p999'))} | {fmt(r.get('max'))} | {r['errors']} |")
    if any(t is not None or c for _, t, c in sizes):
        lines += ["", "Cost by pod size (the GitLab review with N job containers; time: criterion's `mutate_review_by_containers` median, "
                  "no network; allocations: `examples/alloc_by_pod_size.rs`):", "",
                  "| containers | body KiB | µs/review | µs/container | allocations | KiB allocated |", "|---:|---:|---:|---:|---:|---:|"]
        for n, t, c in sizes:
            lines.append(f"| {n} | {fmt(c['body_bytes'] / 1024 if c else None, 1)} | {fmt(t, 0)} | {fmt(t / n if t else None, 1)} | "
                         f"{c['allocations'] if c else '-'} | {fmt(c['bytes_allocated'] / 1024 if c else None, 0)} |")
        timed = [(n, t) for n, t, _ in sizes if t]
        if len(timed) >= 3:
            # Linear or better: the cost of one more container does not grow with the pod
            # (each step's µs per added container within 1.25x of the first step's).
            steps = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(timed, timed[1:])]
            linear = all(step <= 1.25 * steps[0] for step in steps)
            targets.append(("cost linear (or better) in pod size, 1 to 200 containers",
                            "µs per added container, step by step: " + ", ".join(f"{x:.1f}" for x in steps), linear))
    lines += ["", "p99 at saturation (GitLab, 64 connections): " + ", ".join(f"{k} {fmt(v)} ms" for k, v in saturation.items()) + ".", "",
              "| target | measured | |", "|---|---|---|"]
    for what, measured, ok in targets:
        lines.append(f"| {what} | {measured} | {verdict(ok)} |")
    report = "\n".join(lines) + "\n"

    print()
    print(report)
    out = pathlib.Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    (out.with_suffix(".json")).write_text(json.dumps({"rows": [dict(fixture=a, http=b, c=c, injector=o, floor=f) for a, b, c, o, f in rows],
                                                      "quiet": quiet, "floor_decision": decided, "open_loop": [dict(arrivals=n, http=h, **r) for (n, h), r in opens.items()],
                                                      "scaling": sizes}, indent=1))
    print(f"bench: report in {out}")
    if args.readme:
        readme = pathlib.Path(args.readme)
        text = readme.read_text()
        start, end = "<!-- load-bench:start -->", "<!-- load-bench:end -->"
        if start not in text or end not in text:
            sys.exit(f"bench: {readme} has no {start} … {end}")
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        notes = ROOT / "bench/notes.md"
        extra = "\n" + notes.read_text() if notes.exists() else ""
        readme.write_text(before + start + "\n" + report + extra + end + after)
        print(f"bench: {readme} updated")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
