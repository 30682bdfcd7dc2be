#!/usr/bin/env python3
"""Writes the hand-made seeds in fuzz/seeds/ (shared by every target) from the review fixtures (run once; committed)."""
import copy
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
reviews = here.parent / "tests" / "fixtures" / "reviews"
gitlab = json.loads((reviews / "gitlab.json").read_text())


def variant(change):
    r = copy.deepcopy(gitlab)
    change(r)
    return r


def many_containers(r, n=50):
    build = r["request"]["object"]["spec"]["containers"][0]
    r["request"]["object"]["spec"]["containers"] = [dict(build, name=f"build-{i}") for i in range(n)]


def overrides(r):
    r["request"]["object"]["metadata"]["annotations"].update({
        "dind-injector.io/transport": "tcp-tls",
        "dind-injector.io/mtu": "1400",
        "dind-injector.io/sidecar-mode": "container",
        "dind-injector.io/cpu": "2",
        "dind-injector.io/memory": "1Gi",
        "dind-injector.io/storage": "10Gi",
        "dind-injector.io/containers": "build",
        "dind-injector.io/image": "docker:27-dind",
    })


def update(r):
    r["request"]["operation"] = "UPDATE"
    r["request"]["oldObject"] = copy.deepcopy(r["request"]["object"])


def ephemeral(r):
    r["request"]["subResource"] = "ephemeralcontainers"
    r["request"]["object"]["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}]


seeds = {
    "gitlab-50-containers.json": variant(many_containers),
    "gitlab-overrides.json": variant(overrides),
    "gitlab-update.json": variant(update),
    "gitlab-ephemeral.json": variant(ephemeral),
}
out = here / "seeds"
out.mkdir(parents=True, exist_ok=True)
for name, review in seeds.items():
    (out / name).write_text(json.dumps(review, separators=(",", ":")))
# Deeper than serde_json's recursion limit (128) when parsed as a Value; the decoder skips it.
text = json.dumps(gitlab, separators=(",", ":"))
(out / "deep-unknown-field.json").write_text(text.replace('"spec":{', '"spec":{"x":' + "[" * 2000 + "]" * 2000 + ",", 1))
(out / "deep-array.json").write_text("[" * 5000)
