//! The webhook configurations' `matchConditions` evaluated the way kube-apiserver evaluates
//! them, on requests shaped the way it sends them.
//!
//! - `object`, `oldObject` and `request` are bound as JSON maps (the apiserver hands CEL the
//!   unstructured request): a key that is absent is absent, so reading it is the evaluation
//!   error `no such key`, exactly as on a real apiserver (tests/fixtures/apiserver/README.md,
//!   fact 8). `oldObject` is `null` on CREATE.
//! - Requests are never written by hand: [`Requests`] takes the ones a real kube-apiserver
//!   v1.36.2 sent (tests/fixtures/apiserver/*.json for CREATE, `updates/` for UPDATE) and swaps
//!   in another pod, so every field the apiserver leaves out (`subResource` on an ordinary
//!   update, `oldObject` on a create) is left out here too.
//! - A webhook is called when every one of its conditions holds; an evaluation error is
//!   returned as an error, because with `failurePolicy: Fail` it rejects the request.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use cel::objects::{Key, Map, Value as Cel};
use serde_json::Value;

/// JSON as the apiserver hands an unstructured object to CEL: integers are `int`, never `uint`.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(|| Cel::Float(n.as_f64().unwrap_or_default()), Cel::Int),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: HashMap<Key, Cel> = o.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v))).collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// One matchCondition.
pub struct Condition {
    pub name: String,
    pub expression: String,
    program: cel::Program,
}

/// The compiled matchConditions of every webhook of some webhook configurations, by webhook name.
pub struct Conditions {
    pub env: Arc<cel::Env>,
    pub by_webhook: BTreeMap<String, Vec<Condition>>,
}

impl Conditions {
    /// Compiles the conditions of every webhook in `configurations` (Mutating- and
    /// ValidatingWebhookConfiguration objects as JSON); `origin` names where they came from in
    /// failure messages.
    pub fn compile(configurations: &[Value], origin: &str) -> Self {
        let env = Arc::new(cel::Env::stdlib());
        let mut by_webhook = BTreeMap::new();
        for webhook in configurations.iter().flat_map(|d| d["webhooks"].as_array().cloned().unwrap_or_default()) {
            let webhook_name = webhook["name"].as_str().unwrap_or_default().to_owned();
            let conditions = webhook["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or_default().to_owned();
                    let expression = c["expression"].as_str().unwrap_or_default().to_owned();
                    let program = env
                        .compile(&expression)
                        .unwrap_or_else(|e| panic!("{origin}: {webhook_name}: matchCondition {name} does not compile: {e}\n{expression}"));
                    Condition { name, expression, program }
                })
                .collect();
            by_webhook.insert(webhook_name, conditions);
        }
        Conditions { env, by_webhook }
    }

    /// The conditions of every webhook of `manifests/base/webhooks.yaml`.
    pub fn base_manifests() -> Self {
        let path = super::repo_root().join("manifests/base/webhooks.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::compile(&docs, "manifests/base/webhooks.yaml")
    }

    fn conditions(&self, webhook: &str) -> &[Condition] {
        self.by_webhook.get(webhook).unwrap_or_else(|| panic!("no webhook {webhook}; there are {:?}", self.by_webhook.keys()))
    }

    /// The value of one condition of `webhook` on `request` (an AdmissionRequest as JSON).
    pub fn eval(&self, webhook: &str, condition: &str, request: &Value) -> Result<bool, String> {
        let c = self
            .conditions(webhook)
            .iter()
            .find(|c| c.name == condition)
            .unwrap_or_else(|| panic!("{webhook} has no matchCondition {condition}"));
        self.run(webhook, c, request)
    }

    fn run(&self, webhook: &str, c: &Condition, request: &Value) -> Result<bool, String> {
        let mut ctx = cel::Context::with_env(Arc::clone(&self.env));
        ctx.add_variable_from_value("object", to_cel(request.get("object").unwrap_or(&Value::Null)));
        ctx.add_variable_from_value("oldObject", to_cel(request.get("oldObject").unwrap_or(&Value::Null)));
        ctx.add_variable_from_value("request", to_cel(request));
        match c.program.execute(&ctx) {
            Ok(Cel::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{webhook}/{}: returned {other:?}, not a bool", c.name)),
            Err(e) => Err(format!("{webhook}/{}: evaluation error: {e}", c.name)),
        }
    }

    /// Every condition of every webhook on `request`: (webhook, condition, result).
    pub fn eval_all(&self, request: &Value) -> Vec<(String, String, Result<bool, String>)> {
        let mut out = Vec::new();
        for (webhook, conditions) in &self.by_webhook {
            for c in conditions {
                out.push((webhook.clone(), c.name.clone(), self.run(webhook, c, request)));
            }
        }
        out
    }

    /// Whether the apiserver calls `webhook` for `request`: every condition holds. An error is
    /// returned as such: with failurePolicy Fail it rejects the request outright.
    pub fn sends(&self, webhook: &str, request: &Value) -> Result<bool, String> {
        let mut all = true;
        for c in self.conditions(webhook) {
            all &= self.run(webhook, c, request)?;
        }
        Ok(all)
    }
}

/// AdmissionRequests in the exact shape a real kube-apiserver sends them, with any pod in them.
pub struct Requests {
    /// A recorded pod CREATE request (`webhook_calls[0]`, GitLab, unix, native).
    create: Value,
    /// The recorded ordinary pod UPDATE (a label): no `subResource` key.
    update: Value,
    /// The recorded `kubectl debug` UPDATE of `pods/ephemeralcontainers`.
    ephemeral: Value,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(file name, content)` of every `.json` file in `dir`, sorted by name.
pub fn json_files(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), read_json(&p))).collect()
}

/// The recorded pod UPDATE requests of tests/fixtures/apiserver/updates/: (step, request).
pub fn recorded_updates() -> Vec<(String, Value)> {
    json_files(&super::fixtures_dir().join("apiserver/updates"))
        .into_iter()
        .map(|(file, d)| {
            let step = d["step"].as_str().unwrap_or_else(|| panic!("updates/{file}: no step")).to_owned();
            (step, d["review"]["request"].clone())
        })
        .collect()
}

/// Every request the apiserver sent to `/mutate` in tests/fixtures/apiserver/*.json, and for
/// each recording the CREATE a validating webhook gets (the same request with the pod as
/// stored): (what, request).
pub fn recorded_creates() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (file, exchange) in json_files(&super::fixtures_dir().join("apiserver")) {
        let calls = exchange["webhook_calls"].as_array().unwrap_or_else(|| panic!("apiserver/{file}: no webhook_calls"));
        for (i, call) in calls.iter().enumerate() {
            out.push((format!("apiserver/{file} /mutate call {i}"), call["request"]["request"].clone()));
        }
        if exchange["created"] == true
            && let Some(first) = calls.first()
        {
            let mut request = first["request"]["request"].clone();
            request["object"] = exchange["stored"].clone();
            out.push((format!("apiserver/{file} CREATE of the pod as stored"), request));
        }
    }
    out
}

/// The pod as the apiserver would put it in a request: empty strings, lists and nulls left
/// out of every object (Go's `omitempty`), but the values of labels and annotations kept
/// (an annotation may be `""`).
pub fn as_sent(pod: &Value) -> Value {
    let mut pod = pod.clone();
    let kept: Vec<(&str, Value)> =
        ["labels", "annotations"].into_iter().filter_map(|k| pod["metadata"].get(k).cloned().map(|v| (k, v))).collect();
    super::apiserver::drop_empty(&mut pod);
    for (k, v) in kept {
        match pod["metadata"].as_object_mut() {
            Some(meta) if v.as_object().is_some_and(|m| m.is_empty()) => {
                meta.remove(k);
            }
            Some(meta) => {
                meta.insert(k.to_owned(), v);
            }
            None => {}
        }
    }
    pod
}

impl Requests {
    /// The templates, from the project's copy of the recordings.
    pub fn recorded() -> Self {
        let dir = super::fixtures_dir().join("apiserver");
        let exchange = read_json(&dir.join("gitlab-unix-native.json"));
        let create = exchange["webhook_calls"][0]["request"]["request"].clone();
        let updates: BTreeMap<String, Value> = recorded_updates().into_iter().collect();
        let take = |step: &str| updates.get(step).cloned().unwrap_or_else(|| panic!("updates/: no recorded {step} request"));
        Requests { create, update: take("label"), ephemeral: take("ephemeral-container") }
    }

    fn with(template: &Value, object: &Value, old: Option<&Value>) -> Value {
        let mut r = template.clone();
        let object = as_sent(object);
        for key in ["name", "namespace"] {
            match object["metadata"][key].as_str() {
                Some(v) => r[key] = Value::from(v),
                None => {
                    if let Some(m) = r.as_object_mut() {
                        m.remove(key);
                    }
                }
            }
        }
        r["object"] = object;
        match old {
            Some(o) => r["oldObject"] = as_sent(o),
            None => {
                if let Some(m) = r.as_object_mut() {
                    m.remove("oldObject");
                }
            }
        }
        r
    }

    /// The CREATE of `pod`.
    pub fn create(&self, pod: &Value) -> Value {
        Self::with(&self.create, pod, None)
    }

    /// An ordinary UPDATE (label, annotation, finalizer, spec) from `old` to `new`.
    pub fn update(&self, old: &Value, new: &Value) -> Value {
        Self::with(&self.update, new, Some(old))
    }

    /// A `kubectl debug` UPDATE of `pods/ephemeralcontainers` from `old` to `new`.
    pub fn ephemeral(&self, old: &Value, new: &Value) -> Value {
        Self::with(&self.ephemeral, new, Some(old))
    }
}
