//! A model of what a real kube-apiserver (v1.36) does to a pod after the mutating webhooks and
//! before the validating webhooks and etcd, as recorded in tests/fixtures/apiserver/ (see its
//! README). `tests/apiserver.rs` checks the model against every recording, so the tests that use
//! it see the pod the validating webhook really sees.
//!
//! Modelled, for containers, init containers, volumes, annotations and host aliases:
//! - the built-in admission plugins run again: ServiceAccount mounts the pod's
//!   `kube-api-access-*` volume into every (init) container without a mount at the token path,
//!   unless the pod sets `automountServiceAccountToken: false`;
//! - defaulting of what a webhook added (termination message path and policy, image pull policy,
//!   resources, probe timings, port protocol, config map and secret modes, hostPath type);
//! - empty strings and empty lists are not stored (Go's `omitempty`);
//! - an `IfNeeded` webhook is called again only when that re-run changed the pod;
//! - host aliases with a duplicate IP are kept, with the apiserver's warning;
//! - with [`after_mutation_in`], the RuntimeClass plugin: overhead and nodeSelector from the
//!   class, a missing class refused;
//! - with [`after_mutation_without_user_namespaces`], a cluster whose `UserNamespacesSupport`
//!   gate is off (the default before v1.33): `hostUsers` dropped from a created pod.

use serde_json::{Map, Value, json};

/// Where the ServiceAccount plugin mounts the API token.
pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The pod as stored, and the warnings the apiserver returns to the client.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The pod the validating webhooks are sent and etcd keeps.
    pub pod: Value,
    /// What `kubectl create` prints as `Warning: ...`.
    pub warnings: Vec<String>,
    /// Whether the re-run built-in plugins changed the pod (the ServiceAccount plugin mounted
    /// the token into a container the webhook added), which makes the apiserver call a
    /// `reinvocationPolicy: IfNeeded` webhook a second time. Defaulting the webhook's additions
    /// does not count (the 2026-12-02 recordings: one call per injected pod).
    pub reinvokes: bool,
}

/// A RuntimeClass as the RuntimeClass admission plugin reads it.
#[derive(Debug, Clone)]
pub struct RuntimeClass {
    /// Its name.
    pub name: String,
    /// `overhead.podFixed` (`{"cpu": "100m", "memory": "64Mi"}`), or null.
    pub pod_fixed: Value,
    /// `scheduling.nodeSelector`, or null.
    pub node_selector: Value,
}

/// [`after_mutation`] in a cluster with `classes`, the RuntimeClass plugin included (README fact
/// 9): a `runtimeClassName` added by a webhook is completed after it, `spec.overhead` set from the
/// class's `podFixed` and its nodeSelector merged into the pod's; a class that does not exist
/// fails the create with the apiserver's message.
pub fn after_mutation_in(pod: &Value, classes: &[RuntimeClass]) -> Result<Stored, String> {
    let mut stored = after_mutation(pod);
    let Some(name) = stored.pod["spec"]["runtimeClassName"].as_str().map(str::to_owned) else {
        return Ok(stored);
    };
    let pod_name = stored.pod["metadata"]["name"].as_str().or(stored.pod["metadata"]["generateName"].as_str()).unwrap_or("").to_owned();
    let Some(class) = classes.iter().find(|c| c.name == name) else {
        return Err(format!("pods \"{pod_name}\" is forbidden: pod rejected: RuntimeClass \"{name}\" not found"));
    };
    let spec = &mut stored.pod["spec"];
    if class.pod_fixed.is_object() {
        spec["overhead"] = class.pod_fixed.clone();
    }
    if let Some(selector) = class.node_selector.as_object() {
        if !spec["nodeSelector"].is_object() {
            spec["nodeSelector"] = json!({});
        }
        for (k, v) in selector {
            spec["nodeSelector"][k] = v.clone();
        }
    }
    Ok(stored)
}

/// [`after_mutation_in`] on an apiserver whose `UserNamespacesSupport` feature gate is off (beta
/// and off by default in v1.30 to v1.32; on by default from v1.33, locked on from v1.36): the pod
/// strategy's `PrepareForCreate` drops `spec.hostUsers` of a new pod (`dropDisabledFields` in
/// pkg/api/pod/util.go), after the mutating webhooks and before the validating ones. Not
/// recorded (the recordings are v1.36); read from the apiserver's source.
pub fn after_mutation_without_user_namespaces(pod: &Value, classes: &[RuntimeClass]) -> Result<Stored, String> {
    let mut stored = after_mutation_in(pod, classes)?;
    if let Some(spec) = stored.pod["spec"].as_object_mut() {
        spec.remove("hostUsers");
    }
    Ok(stored)
}

/// Applies the apiserver's post-mutation steps to `pod` (a webhook's patch already applied).
pub fn after_mutation(pod: &Value) -> Stored {
    let mut pod = pod.clone();
    let spec = &mut pod["spec"];
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec[list].as_array_mut() {
            containers.iter_mut().for_each(default_container);
        }
    }
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.iter_mut().for_each(default_volume);
    }
    let reinvokes = mount_service_account_token(spec);
    drop_empty(&mut pod);
    let warnings = duplicate_host_alias_ips(&pod);
    Stored { pod, warnings, reinvokes }
}

fn set_default(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(key).or_insert(value);
    }
}

fn default_container(c: &mut Value) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    let image = c["image"].as_str().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let latest = !last.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
    set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = &mut c[probe];
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
        }
    }
    if let Some(ports) = c["ports"].as_array_mut() {
        ports.iter_mut().for_each(|p| set_default(p, "protocol", json!("TCP")));
    }
    if let Some(env) = c["env"].as_array_mut() {
        for e in env {
            if e["valueFrom"]["fieldRef"].is_object() {
                set_default(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
            }
        }
    }
}

fn default_volume(v: &mut Value) {
    for source in ["configMap", "secret", "projected"] {
        if v[source].is_object() {
            set_default(&mut v[source], "defaultMode", json!(420));
        }
    }
    // `type` defaults to "" (HostPathUnset), which is then not stored.
    if v["hostPath"].is_object() {
        set_default(&mut v["hostPath"], "type", json!(""));
    }
}

/// Mounts the token where the ServiceAccount plugin would; whether it mounted any.
fn mount_service_account_token(spec: &mut Value) -> bool {
    if spec["automountServiceAccountToken"] == json!(false) {
        return false;
    }
    let Some(volume) = spec["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find_map(|v| v["name"].as_str().filter(|n| n.starts_with("kube-api-access-"))))
        .map(str::to_owned)
    else {
        return false;
    };
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let has_mount = c["volumeMounts"].as_array().is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_PATH));
            if has_mount {
                continue;
            }
            mounted = true;
            let mount = json!({"name": volume, "mountPath": TOKEN_PATH, "readOnly": true});
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
        }
    }
    mounted
}

/// Removes object members whose value is `""`, `[]` or `null`, at every depth.
pub fn drop_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| {
                drop_empty(v);
                !v.is_null() && v != "" && !v.as_array().is_some_and(Vec::is_empty)
            });
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

fn duplicate_host_alias_ips(pod: &Value) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut warnings = Vec::new();
    for (i, alias) in pod["spec"]["hostAliases"].as_array().into_iter().flatten().enumerate() {
        let ip = alias["ip"].as_str().unwrap_or_default();
        if seen.contains(&ip) {
            warnings.push(format!("spec.hostAliases[{i}].ip: duplicate ip {ip:?}"));
        }
        seen.push(ip);
    }
    warnings
}

/// The fields the model claims to reproduce, for comparison with a recorded `stored` pod.
pub fn modelled_fields(pod: &Value) -> Value {
    let mut out = Map::new();
    for key in ["initContainers", "containers", "volumes", "hostAliases"] {
        out.insert(key.to_owned(), pod["spec"][key].clone());
    }
    out.insert("annotations".to_owned(), pod["metadata"]["annotations"].clone());
    Value::Object(out)
}
