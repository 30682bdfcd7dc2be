//! `daemon.json`: the dockerd settings kept in the `dind-injector-daemon-config` ConfigMap.

use serde_json::{Map, Value};

use crate::config::DaemonConfig;

/// The `daemon.json` document for `config`. Keys the command line sets are refused when the
/// configuration is loaded (`config::DAEMON_JSON_RESERVED`), so this never conflicts with them.
pub fn daemon_json(config: &DaemonConfig) -> Value {
    let mut doc: Map<String, Value> = config.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !config.registry_mirrors.is_empty() {
        doc.insert("registry-mirrors".into(), config.registry_mirrors.clone().into());
    }
    if !config.insecure_registries.is_empty() {
        doc.insert("insecure-registries".into(), config.insecure_registries.clone().into());
    }
    Value::Object(doc)
}

/// [`daemon_json`] as pretty-printed text, as it is written into the ConfigMap.
pub fn daemon_json_text(config: &DaemonConfig) -> String {
    serde_json::to_string_pretty(&daemon_json(config)).unwrap_or_else(|_| "{}".into())
}
