"""The Helm chart (charts/dind-injector), rendered and linted by Helm's own engine.

helm-python-sdk embeds Helm v4's Go library: `Chart.load(dir).render(values, name=, namespace=)`
is what `helm install` renders (values.schema.json included), `lint(dir, strict=True)` is
`helm lint --strict`. No helm binary, no cluster.

The kustomize side is rendered LIVE (`kubectl kustomize manifests/overlays/<overlay>`), so a
change to manifests/ that the chart does not have fails here. Objects are compared parsed, field
by field, with exactly two allowances, both checked rather than assumed:

  * HELM_LABELS below, in metadata.labels only: the chart must carry all four on every object,
    and the manifests none of them.
  * ConfigMap data config.yaml is compared as the YAML it holds (kustomize copies the commented
    file, Helm writes the values with toYaml), and both are also run through
    `dind-injector check-config --print` and must give the same effective configuration.

Run by `make test-helm` (part of `make test`) in .venv-helm/ (scripts/helm-venv.sh):
    .venv-helm/bin/python tests/helm/test_chart.py [--binary target/debug/dind-injector] [-v]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dind-injector"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
BINARY = Path(os.environ.get("DIND_INJECTOR_BIN", ROOT / "target" / "debug" / "dind-injector"))

# The documented install: `helm install dind-injector charts/dind-injector -n dind-injector`.
RELEASE = "dind-injector"
NAMESPACE = "dind-injector"

# Labels Helm's conventions add (https://helm.sh/docs/chart_best_practices/labels) and the
# manifests do not have. The only difference the comparison ignores, in metadata.labels only
# (never in selectors or pod template labels, which the chart keeps identical).
HELM_LABELS = frozenset(
    {
        "helm.sh/chart",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
    }
)

CERT_MANAGER = {"certificates": {"mode": "certManager"}}
WITH_NAMESPACE = {"namespace": {"create": True}}
# Webhook values other than the defaults (WebhookGuards).
CUSTOM_WEBHOOKS = {
    "webhooks": {
        "failurePolicy": "Ignore",
        "timeoutSeconds": 10,
        "excludedNamespaces": ["kube-system", "gitlab-system"],
        "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ci"]}]},
    },
    "commonAnnotations": {"owner": "platform"},
}
# Every knob of values.yaml that is not about webhooks (Values).
SCHEDULING_AND_METADATA = {
    "replicas": 3,
    "image": {"tag": "0.2.0", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "ghcr"}],
    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    "logFormat": "text",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
    "priorityClassName": "platform-critical",
    "topologySpread": {"extra": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]},
    "commonLabels": {"team": "platform"},
    "commonAnnotations": {"owner": "platform"},
    "podLabels": {"sidecar.istio.io/inject": "false"},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "podDisruptionBudget": {"maxUnavailable": 1},
    "config": {"sidecar": {"daemonConfigMap": "ci-daemon-json"}},
}
CHANGED_CONFIG = {
    "config": {
        "sidecar": {
            "transport": "tcp-tls", "mtu": 1450, "socketGroup": 2375,
            "resources": {"cpu": "1", "cpuLimit": "2", "memory": "1Gi", "memoryLimit": "8Gi"},
            "startupTimeout": "180s",
        },
        "daemon": {
            "registryMirrors": ["https://mirror.example.com"],
            "insecureRegistries": ["registry.ci.svc:5000"],
            "settings": {"log-level": "warn", "features": {"containerd-snapshotter": True}},
        },
        "overrides": {"maxCpu": "8", "allowedTransports": ["unix"]},
        "server": {"maxBodyBytes": 8388608, "shutdownGrace": "25s"},
        "policy": {"mode": "audit", "level": "restricted", "allowLooserNamespaces": True},
    }
}
AFFINITY = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}}
NO_SPREAD = {"podAntiAffinity": "none", "topologySpread": {"nodes": False}}
YOUR_ISSUER = {"certificates": {"mode": "certManager", "certManager": {
    "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"},
    "duration": "720h", "renewBefore": "240h"}}}
ONE_REPLICA = {"replicas": 1, "podDisruptionBudget": {"enabled": False}}
DRIFT = {**WITH_NAMESPACE, "webhooks": {"timeoutSeconds": 7}}

# Every (values, release name, namespace) the tests render, by name. `--dump-webhooks` prints the
# webhook configurations of each, and tests/cel_shipped.rs evaluates every matchCondition in them
# on the requests a real kube-apiserver sends; main() fails if a test renders values missing here.
VALUE_SETS: dict[str, tuple[dict[str, Any], str, str]] = {
    "defaults": ({}, RELEASE, NAMESPACE),
    "namespace.create": (WITH_NAMESPACE, RELEASE, NAMESPACE),
    "certManager": (CERT_MANAGER, RELEASE, NAMESPACE),
    "certManager, namespace.create": ({**CERT_MANAGER, **WITH_NAMESPACE}, RELEASE, NAMESPACE),
    "custom webhooks": (CUSTOM_WEBHOOKS, RELEASE, NAMESPACE),
    "custom webhooks, certManager": ({**CUSTOM_WEBHOOKS, **CERT_MANAGER}, RELEASE, NAMESPACE),
    "custom webhooks, certManager, in ci-system": ({**CUSTOM_WEBHOOKS, **CERT_MANAGER}, RELEASE, "ci-system"),
    "release ci-docker in ci": ({}, "ci-docker", "ci"),
    "release ci-docker in ci, certManager": (CERT_MANAGER, "ci-docker", "ci"),
    "scheduling and metadata": (SCHEDULING_AND_METADATA, RELEASE, NAMESPACE),
    "changed config": (CHANGED_CONFIG, RELEASE, NAMESPACE),
    "affinity": (AFFINITY, RELEASE, NAMESPACE),
    "no spread": (NO_SPREAD, RELEASE, NAMESPACE),
    "your issuer": (YOUR_ISSUER, RELEASE, NAMESPACE),
    "one replica": (ONE_REPLICA, RELEASE, NAMESPACE),
    "drift": (DRIFT, RELEASE, NAMESPACE),
}

# What render() rendered during this run: (values, name, namespace).
RENDERED: list[tuple[dict[str, Any], str, str]] = []

# ---------------------------------------------------------------------------------------------
# Rendering


def parse_documents(text: str, where: str) -> list[dict[str, Any]]:
    objects = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc:
            raise AssertionError(f"{where}: a document that is not a Kubernetes object: {doc!r}")
        objects.append(doc)
    return objects


_kustomized: dict[str, list[dict[str, Any]]] = {}


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """The objects of `kubectl kustomize manifests/overlays/<overlay>`, rendered now."""
    if overlay not in _kustomized:
        path = f"manifests/overlays/{overlay}"
        try:
            out = subprocess.run(
                [KUBECTL, "kustomize", path], cwd=ROOT, capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise AssertionError(
                f"cannot run `{KUBECTL} kustomize {path}`: kubectl is not installed (it bundles "
                "kustomize); install it or set KUBECTL"
            ) from None
        if out.returncode != 0:
            raise AssertionError(f"`{KUBECTL} kustomize {path}` failed:\n{out.stderr}")
        _kustomized[overlay] = parse_documents(out.stdout, path)
    return copy.deepcopy(_kustomized[overlay])


def render(
    values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The objects the chart renders with these values (what `helm install` would send)."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=name, namespace=namespace)
    RENDERED.append((copy.deepcopy(values or {}), name, namespace))
    objects = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(parse_documents(manifests[path], path))
    return objects


def render_error(values: dict[str, Any]) -> str:
    """The message a render with these values fails with (it must fail)."""
    try:
        render(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"values {values} were accepted")


def ident(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj['kind']} {ns + '/' if ns else ''}{meta.get('name')} ({obj['apiVersion']})"


def by_ident(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for obj in objects:
        key = ident(obj)
        assert key not in out, f"{key} is rendered twice"
        out[key] = obj
    return out


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# Comparing


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where two parsed objects differ, as `path: expected ... rendered ...`."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual), key=str):
            here = f"{path}.{key}"
            if key not in actual:
                out.append(f"{here}: missing from the chart (manifests: {expected[key]!r})")
            elif key not in expected:
                out.append(f"{here}: only in the chart ({actual[key]!r})")
            else:
                out.extend(differences(expected[key], actual[key], here))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items in the manifests, {len(actual)} in the chart:\n"
                    f"      manifests: {expected!r}\n      chart:     {actual!r}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out.extend(differences(e, a, f"{path}[{i}]"))
        return out
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: manifests {expected!r}, chart {actual!r}"]
    return []


def normalize_manifest(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    labels = obj.get("metadata", {}).get("labels", {})
    clash = HELM_LABELS & set(labels)
    assert not clash, f"manifests: {ident(obj)} has Helm's labels {sorted(clash)}: the comparison would hide them"
    return parse_config(obj)


def normalize_chart(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    labels = obj.get("metadata", {}).get("labels", {})
    missing = HELM_LABELS - set(labels)
    assert not missing, f"chart: {ident(obj)} lacks Helm's conventional labels {sorted(missing)}"
    for key in HELM_LABELS:
        del labels[key]
    return parse_config(obj)


def parse_config(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "ConfigMap" and "config.yaml" in obj.get("data", {}):
        obj["data"]["config.yaml"] = yaml.safe_load(obj["data"]["config.yaml"])
    return obj


def assert_same_objects(
    test: unittest.TestCase,
    manifests: list[dict[str, Any]],
    chart: list[dict[str, Any]],
    what: str,
) -> None:
    want = {k: normalize_manifest(v) for k, v in by_ident(manifests).items()}
    got = {k: normalize_chart(v) for k, v in by_ident(chart).items()}
    problems = []
    for key in sorted(set(want) - set(got)):
        problems.append(f"{key}: in the manifests, not rendered by the chart")
    for key in sorted(set(got) - set(want)):
        problems.append(f"{key}: rendered by the chart, not in the manifests")
    for key in sorted(set(want) & set(got)):
        problems.extend(f"{key} {d}" for d in differences(want[key], got[key]))
    if problems:
        test.fail(
            f"{what}: the chart and the manifests differ ({len(problems)}); port the manifest "
            "change into charts/dind-injector (or the chart change into manifests/):\n  "
            + "\n  ".join(problems)
        )


# ---------------------------------------------------------------------------------------------
# dind-injector check-config


def check_config(text: str, name: str = "config.yaml") -> tuple[int, str]:
    if not BINARY.exists():
        raise AssertionError(
            f"{BINARY} is missing: build it (cargo build --locked --bin dind-injector) or set "
            "DIND_INJECTOR_BIN"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        out = subprocess.run(
            [str(BINARY), "check-config", str(path), "--print"],
            capture_output=True, text=True, check=False,
        )
    # The first line names the temporary file.
    body = out.stdout.split("\n", 1)[1] if "\n" in out.stdout else out.stdout
    return out.returncode, body + out.stderr


def config_text(objects: list[dict[str, Any]]) -> str:
    cm = find(objects, "ConfigMap")
    return cm["data"]["config.yaml"]


# ---------------------------------------------------------------------------------------------
# The tests


class Lint(unittest.TestCase):
    def lint(self, values: dict[str, Any] | None) -> None:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        self.assertEqual(report["errors"], [], f"helm lint --strict errors: {report}")
        self.assertEqual(bad, [], f"helm lint --strict warnings or errors: {bad}")
        self.assertEqual(report["total_charts_linted"], 1)

    def test_strict_lint_is_clean_with_default_values(self) -> None:
        self.lint(None)

    def test_strict_lint_is_clean_with_cert_manager_values(self) -> None:
        self.lint({**CERT_MANAGER, **WITH_NAMESPACE})

    def test_chart_metadata(self) -> None:
        with helm.Chart.load(CHART) as chart:
            meta = chart.metadata
        cargo = (ROOT / "Cargo.toml").read_text()
        version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', cargo)
        assert version
        self.assertEqual(meta.get("appVersion"), version.group(1), "appVersion follows Cargo.toml's version")
        self.assertEqual(meta.get("kubeVersion"), ">=1.29.0-0")
        self.assertEqual(meta.get("apiVersion"), "v2")


class SameObjectsAsManifests(unittest.TestCase):
    def test_default_values_render_the_self_managed_overlay(self) -> None:
        manifests = kustomize("self-managed")
        namespaces = [o for o in manifests if o["kind"] == "Namespace"]
        self.assertEqual(len(namespaces), 1)
        # The one object the defaults leave out: `helm install --create-namespace` makes the
        # namespace, and Helm refuses to install a release that also renders it.
        assert_same_objects(
            self,
            [o for o in manifests if o["kind"] != "Namespace"],
            render(),
            "default values vs kubectl kustomize manifests/overlays/self-managed (Namespace aside)",
        )

    def test_namespace_create_renders_the_whole_self_managed_overlay(self) -> None:
        assert_same_objects(
            self, kustomize("self-managed"), render(WITH_NAMESPACE),
            "namespace.create=true vs kubectl kustomize manifests/overlays/self-managed",
        )

    def test_cert_manager_values_render_the_cert_manager_overlay(self) -> None:
        assert_same_objects(
            self, kustomize("cert-manager"), render({**CERT_MANAGER, **WITH_NAMESPACE}),
            "certificates.mode=certManager vs kubectl kustomize manifests/overlays/cert-manager",
        )

    def test_the_comparison_sees_a_difference(self) -> None:
        # A chart that drifted (here: another timeout) must fail the comparison.
        with self.assertRaises(AssertionError) as caught:
            assert_same_objects(
                self, kustomize("self-managed"), render(DRIFT), "drift"
            )
        self.assertIn(".webhooks[0].timeoutSeconds: manifests 5, chart 7", str(caught.exception))


class ConfigMapReadByTheInjector(unittest.TestCase):
    def test_default_config_map_is_valid_and_reads_as_the_manifests_one(self) -> None:
        code, chart_effective = check_config(config_text(render()))
        self.assertEqual(code, 0, f"dind-injector check-config refused the chart's ConfigMap:\n{chart_effective}")
        code, manifest_effective = check_config(config_text(kustomize("self-managed")))
        self.assertEqual(code, 0, manifest_effective)
        self.assertEqual(chart_effective, manifest_effective,
                         "the injector reads a different configuration from the chart than from the manifests")

    def test_changed_values_reach_the_injector_as_written(self) -> None:
        config = CHANGED_CONFIG["config"]
        code, out = check_config(config_text(render(CHANGED_CONFIG)))
        self.assertEqual(code, 0, out)
        effective = yaml.safe_load(out.split("# daemon.json", 1)[0])
        for section, values in config.items():
            for key, value in values.items():
                if isinstance(value, dict) and section != "daemon":
                    for k, v in value.items():
                        self.assertEqual(effective[section][key][k], v, f"{section}.{key}.{k}")
                else:
                    self.assertEqual(effective[section][key], value, f"{section}.{key}")
        self.assertIn('"registry-mirrors"', out, "daemon.json carries the mirrors")


class SchemaRefusesBadValues(unittest.TestCase):
    def refused(self, values: dict[str, Any], *needles: str) -> str:
        message = render_error(values)
        self.assertIn("values don't meet the specifications of the schema", message)
        for needle in needles:
            self.assertIn(needle, message)
        return message

    def test_unknown_top_level_key(self) -> None:
        self.refused({"replica": 3}, "additional properties 'replica' not allowed")

    def test_unknown_config_key(self) -> None:
        # The injector would refuse it too (deny_unknown_fields), but only once running.
        self.refused({"config": {"sidecar": {"imagePullPolicyy": "Always"}}},
                     "/config/sidecar", "additional properties 'imagePullPolicyy' not allowed")

    def test_wrong_type(self) -> None:
        self.refused({"replicas": "two"}, "/replicas", "got string, want integer")

    def test_number_where_the_injector_reads_a_string(self) -> None:
        self.refused({"config": {"sidecar": {"resources": {"cpu": 1}}}},
                     "/config/sidecar/resources/cpu", "got number, want string")

    def test_policy_mode_that_does_not_exist(self) -> None:
        self.refused({"config": {"policy": {"mode": "strict"}}},
                     "/config/policy/mode", "'enforce', 'audit', 'off'")

    def test_policy_level_that_does_not_exist(self) -> None:
        self.refused({"config": {"policy": {"level": "privileged"}}}, "/config/policy/level")

    def test_webhook_settings(self) -> None:
        self.refused({"webhooks": {"failurePolicy": "Deny"}}, "/webhooks/failurePolicy")
        self.refused({"webhooks": {"timeoutSeconds": 31}}, "/webhooks/timeoutSeconds")

    def test_certificate_mode(self) -> None:
        self.refused({"certificates": {"mode": "letsencrypt"}}, "/certificates/mode")

    def test_interval_without_unit(self) -> None:
        self.refused({"config": {"server": {"requestTimeout": "10"}}}, "/config/server/requestTimeout")

    def test_single_replica_with_budget(self) -> None:
        message = render_error({"replicas": 1})
        self.assertIn("podDisruptionBudget", message)
        render(ONE_REPLICA)


def webhooks_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for cfg in (o for o in objects if o["kind"] == kind):
            for hook in cfg["webhooks"]:
                out[f"{kind}/{hook['name']}"] = hook
    return out


class WebhookGuards(unittest.TestCase):
    """matchConditions, namespace exclusions and failure policies of the manifests survive every
    values file (not only the defaults)."""

    CUSTOM = CUSTOM_WEBHOOKS

    def check(self, overlay: str, values: dict[str, Any], namespace: str = NAMESPACE) -> None:
        want = webhooks_of(kustomize(overlay))
        got = webhooks_of(render(values, namespace=namespace))
        self.assertEqual(sorted(want), sorted(got), "the same webhooks")
        custom = values.get("webhooks", {})
        for name, hook in want.items():
            mine = got[name]
            self.assertEqual(mine.get("matchConditions"), hook.get("matchConditions"), f"{name}: matchConditions")
            self.assertEqual(mine["failurePolicy"], custom.get("failurePolicy", hook["failurePolicy"]), f"{name}: failurePolicy")
            self.assertEqual(mine["timeoutSeconds"], custom.get("timeoutSeconds", hook["timeoutSeconds"]))
            for key in ("sideEffects", "rules", "matchPolicy", "admissionReviewVersions", "reinvocationPolicy"):
                self.assertEqual(mine.get(key), hook.get(key), f"{name}: {key}")
            self.assertEqual(mine["clientConfig"]["service"]["namespace"], namespace)
            self.assertEqual(mine["clientConfig"]["service"]["path"], hook["clientConfig"]["service"]["path"])
            # Every term of the manifests' selector, the injector's namespace swapped for the
            # release namespace, then the extra terms.
            terms = copy.deepcopy(hook["namespaceSelector"]["matchExpressions"])
            for term in terms:
                if term["key"] == "kubernetes.io/metadata.name":
                    term["values"] = [namespace if v == NAMESPACE else v for v in term["values"]]
                    for extra in custom.get("excludedNamespaces", []):
                        if extra not in term["values"]:
                            term["values"].insert(-1, extra)
            terms += custom.get("namespaceSelector", {}).get("matchExpressions", [])
            self.assertEqual(mine["namespaceSelector"], {"matchExpressions": terms}, f"{name}: namespaceSelector")

    def test_defaults(self) -> None:
        self.check("self-managed", {})

    def test_cert_manager(self) -> None:
        self.check("cert-manager", CERT_MANAGER)

    def test_custom_webhook_values(self) -> None:
        self.check("self-managed", self.CUSTOM)
        self.check("cert-manager", {**self.CUSTOM, **CERT_MANAGER}, namespace="ci-system")

    def test_cert_manager_injection_annotation_kept_with_common_annotations(self) -> None:
        objects = render({**self.CUSTOM, **CERT_MANAGER})
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            annotations = find(objects, kind)["metadata"]["annotations"]
            self.assertEqual(annotations, {"owner": "platform", "cert-manager.io/inject-ca-from": "dind-injector/dind-injector"})


class OtherReleaseNames(unittest.TestCase):
    """A release not named dind-injector: every name that refers to another object follows."""

    def test_names_agree_self_managed(self) -> None:
        objects = render({}, name="ci-docker", namespace="ci")
        full = "ci-docker-dind-injector"
        for obj in objects:
            self.assertTrue(obj["metadata"]["name"].startswith(full), ident(obj))
            if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                self.assertEqual(obj["metadata"]["namespace"], "ci", ident(obj))
        deployment = find(objects, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        # The injector's defaults are dind-injector and dind-injector-tls: it must be told.
        self.assertEqual(env["DIND_INJECTOR_SERVICE"], full)
        self.assertEqual(env["DIND_INJECTOR_TLS_SECRET"], f"{full}-tls")
        self.assertEqual(env["DIND_INJECTOR_WEBHOOK_CONFIGURATION"], full)
        self.assertEqual(pod["serviceAccountName"], full)
        self.assertEqual(pod["volumes"][0]["configMap"]["name"], f"{full}-config")
        find(objects, "ConfigMap", f"{full}-config")
        find(objects, "Service", full)
        find(objects, "MutatingWebhookConfiguration", full)
        find(objects, "ValidatingWebhookConfiguration", full)
        for hook in webhooks_of(objects).values():
            self.assertEqual(hook["clientConfig"]["service"], {**hook["clientConfig"]["service"], "name": full, "namespace": "ci"})
        certs_role = find(objects, "ClusterRole", f"{full}-certs")
        self.assertEqual(certs_role["rules"][0]["resourceNames"], [full])
        role = find(objects, "Role", f"{full}-certs")
        self.assertEqual(role["rules"][0]["resourceNames"], [f"{full}-tls"])
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            for binding in (o for o in objects if o["kind"] == kind):
                self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": full, "namespace": "ci"}])

    def test_names_agree_cert_manager(self) -> None:
        objects = render(CERT_MANAGER, name="ci-docker", namespace="ci")
        full = "ci-docker-dind-injector"
        cert = find(objects, "Certificate", full)
        self.assertEqual(cert["spec"]["dnsNames"], [f"{full}.ci.svc", f"{full}.ci.svc.cluster.local"])
        self.assertEqual(cert["spec"]["secretName"], f"{full}-tls")
        self.assertEqual(cert["spec"]["issuerRef"]["name"], f"{full}-ca")
        find(objects, "Issuer", f"{full}-ca")
        pod = find(objects, "Deployment")["spec"]["template"]["spec"]
        tls = [v for v in pod["volumes"] if v["name"] == "tls"][0]
        self.assertEqual(tls["secret"]["secretName"], f"{full}-tls")
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            self.assertEqual(find(objects, kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], f"ci/{full}")
        self.assertEqual([o for o in objects if o["kind"] in ("Role", "RoleBinding")], [],
                         "no Secret access with cert-manager")


class Values(unittest.TestCase):
    """The knobs of values.yaml reach the objects."""

    def test_scheduling_and_metadata(self) -> None:
        values = SCHEDULING_AND_METADATA
        objects = render(values)
        for obj in objects:
            self.assertEqual(obj["metadata"]["labels"]["team"], "platform", ident(obj))
            self.assertEqual(obj["metadata"]["annotations"]["owner"], "platform", ident(obj))
        deployment = find(objects, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 3)
        template = deployment["spec"]["template"]
        self.assertEqual(template["metadata"]["labels"]["sidecar.istio.io/inject"], "false")
        self.assertEqual(template["metadata"]["annotations"], {"prometheus.io/scrape": "true"})
        pod = template["spec"]
        container = pod["containers"][0]
        self.assertEqual(container["image"], "ghcr.io/dind-injector/dind-injector:0.2.0@sha256:" + "a" * 64)
        self.assertEqual(container["imagePullPolicy"], "Always")
        self.assertEqual(container["resources"], values["resources"])
        self.assertIn({"name": "DIND_INJECTOR_LOG_FORMAT", "value": "text"}, container["env"])
        self.assertEqual(pod["imagePullSecrets"], [{"name": "ghcr"}])
        self.assertEqual(pod["nodeSelector"], values["nodeSelector"])
        self.assertEqual(pod["tolerations"], values["tolerations"])
        self.assertEqual(pod["priorityClassName"], "platform-critical")
        spread = pod["topologySpreadConstraints"]
        self.assertEqual([c["topologyKey"] for c in spread], ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
        selector = deployment["spec"]["selector"]
        self.assertEqual(spread[1]["labelSelector"], selector, "a missing labelSelector selects the injector's pods")
        self.assertEqual(find(objects, "PodDisruptionBudget")["spec"], {"maxUnavailable": 1, "selector": selector})
        role = find(objects, "ClusterRole", "dind-injector")
        named = [r["resourceNames"] for r in role["rules"] if r.get("resources") == ["configmaps"] and "resourceNames" in r]
        self.assertEqual(named, [["ci-daemon-json"]], "RBAC allows the ConfigMap name the configuration uses")

    def test_affinity_and_spread_can_be_replaced_or_dropped(self) -> None:
        pod = find(render(AFFINITY), "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(pod["affinity"], AFFINITY["affinity"])
        pod = find(render(NO_SPREAD), "Deployment")["spec"]["template"]["spec"]
        self.assertNotIn("affinity", pod)
        self.assertNotIn("topologySpreadConstraints", pod)

    def test_cert_manager_with_an_issuer_of_yours(self) -> None:
        ref = YOUR_ISSUER["certificates"]["certManager"]["issuerRef"]
        objects = render(YOUR_ISSUER)
        cert_manager = [o for o in objects if o["apiVersion"] == "cert-manager.io/v1"]
        self.assertEqual([ident(o) for o in cert_manager], ["Certificate dind-injector/dind-injector (cert-manager.io/v1)"],
                         "no private CA when an issuer is given")
        spec = cert_manager[0]["spec"]
        self.assertEqual(spec["issuerRef"], ref)
        self.assertEqual((spec["duration"], spec["renewBefore"]), ("720h", "240h"))


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", type=Path, help="the dind-injector binary (check-config)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--dump-webhooks", action="store_true",
                        help="print the webhook configurations of every values set as JSON, run no test")
    args = parser.parse_args()
    if args.dump_webhooks:
        dump = {}
        for set_name, (values, name, namespace) in VALUE_SETS.items():
            kinds = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
            dump[set_name] = [o for o in render(values, name=name, namespace=namespace) if o["kind"] in kinds]
        json.dump(dump, sys.stdout)
        return 0
    global BINARY
    if args.binary:
        BINARY = args.binary.resolve()
    start = time.monotonic()
    print(f"helm: charts/dind-injector with helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}),"
          f" kustomize via {KUBECTL}, check-config via {BINARY.relative_to(ROOT) if BINARY.is_relative_to(ROOT) else BINARY}")
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    known = list(VALUE_SETS.values())
    unlisted = [r for r in RENDERED if r not in known]
    if unlisted:
        failed += 1
        print("FAIL: values rendered by a test but missing from VALUE_SETS (tests/cel_shipped.rs would not check"
              " their matchConditions):")
        for values, name, namespace in unlisted:
            print(f"  {values!r} (release {name} in {namespace})")
    passed = result.testsRun - failed - len(result.skipped)
    print(f"helm chart tests in {time.monotonic() - start:.1f}s")
    print(f"helm: {passed} passed, {failed} failed")
    return 0 if result.wasSuccessful() and not unlisted and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
