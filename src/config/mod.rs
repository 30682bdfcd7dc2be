//! The injector's configuration: one YAML file in which every field has a default and every
//! unknown key is an error that names its path.
//!
//! One file per section: [`sidecar`](SidecarConfig), [`daemon`](DaemonConfig),
//! [`overrides`](OverrideLimits), [`cache`](CacheConfig), [`isolation`](IsolationConfig),
//! [`policy`](PolicyConfig) and [`server`](ServerConfig); this
//! module reads the file, holds the types the sections share and collects every problem.

mod cache;
mod daemon;
mod isolation;
mod overrides;
mod policy;
mod server;
mod sidecar;

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::image::ImagePattern;
use crate::quantity::Quantity;

pub use cache::{CacheConfig, CacheMode, CacheScope, MAX_SLOTS_PER_SCOPE};
pub use daemon::{DAEMON_JSON_KNOWN, DAEMON_JSON_REMOVED, DAEMON_JSON_RESERVED, DaemonConfig};
pub use isolation::{Isolation, IsolationConfig, RuntimeClassRef, SeccompConfig, UsernsConfig};
pub use overrides::OverrideLimits;
pub use policy::{Level, PolicyConfig, PolicyMode};
pub use server::ServerConfig;
pub use sidecar::{MTU_RANGE, Mtu, SidecarConfig, SidecarMode, SidecarResources, Transport, WorkspaceMirroring};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// What the injected sidecar looks like.
    pub sidecar: SidecarConfig,
    /// The dockerd settings written into `daemon.json`.
    pub daemon: DaemonConfig,
    /// What pod and namespace annotations may change, and how far.
    pub overrides: OverrideLimits,
    /// A warm Docker cache across jobs (node-local slots, off by default).
    pub cache: CacheConfig,
    /// The RuntimeClass of each isolation mode (`sidecar.isolation` picks the mode).
    pub isolation: IsolationConfig,
    /// The validating webhook: how strictly every other container is held to Pod Security.
    pub policy: PolicyConfig,
    /// Limits and timings of the HTTPS server.
    pub server: ServerConfig,
}

/// A duration written as `250ms`, `5s` or `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

impl Interval {
    /// Parses `<number><unit>` with unit `ms`, `s` or `m`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} does not start with a whole number (write 250ms, 5s or 2m)"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => return Err(format!("{s:?} has no unit ms, s or m")),
        };
        Ok(Interval(d))
    }

    fn secs(n: u64) -> Self {
        Interval(Duration::from_secs(n))
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) { s.serialize_str(&format!("{}s", ms / 1000)) } else { s.serialize_str(&format!("{ms}ms")) }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(de::Error::custom)
    }
}

/// A configuration that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not have the configuration's shape.
    #[error("configuration {source_name}: at `{path}`: {message}")]
    Parse {
        /// Where the YAML came from.
        source_name: String,
        /// The key path of the error (`sidecar.transport`).
        path: String,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// The values are well-formed but not usable.
    #[error("configuration {source_name} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Where the YAML came from.
        source_name: String,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path (`overrides.maxMemory`).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Config {
    /// Things that are allowed but probably wrong: daemon.json keys this version does not know
    /// (dockerd exits on an unknown key, unless the sidecar image's dockerd is newer).
    pub fn advisories(&self) -> Vec<ConfigProblem> {
        self.daemon
            .settings
            .keys()
            .filter(|k| {
                !DAEMON_JSON_KNOWN.contains(&k.as_str())
                    && !DAEMON_JSON_REMOVED.contains(&k.as_str())
                    && !DAEMON_JSON_RESERVED.iter().any(|(r, _)| r == k)
            })
            .map(|k| ConfigProblem {
                path: format!("daemon.settings.{k}"),
                message: "dockerd 28 does not know this daemon.json key and exits on unknown keys; keep it only if the sidecar image's dockerd is newer and knows it".into(),
            })
            .collect()
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `source_name` names it in errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let mut path = String::new();
            let options = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
            })
            .map_err(|e| ConfigError::Parse {
                source_name: source_name.to_owned(),
                path: if path.is_empty() || path == "." { "(top)".into() } else { path.clone() },
                message: e.to_string(),
            })?
        };
        let problems = config.problems();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { source_name: source_name.to_owned(), problems }) }
    }

    /// Every problem with the values, each with its key path and the fix.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |path: &str, message: String| out.push(ConfigProblem { path: path.to_owned(), message });
        self.sidecar.check(&mut bad);
        self.daemon.check(&mut bad);
        self.overrides.check(&mut bad);
        self.cache.check(&mut bad);
        self.isolation.check(&mut bad);
        self.server.check(&mut bad);
        out
    }

    /// The default image's pattern list plus the configured image itself: what an override
    /// may choose.
    pub fn image_allowed(&self, image: &str) -> bool {
        image == self.sidecar.image || self.overrides.allowed_images.iter().any(|p| ImagePattern::new(p).matches(image))
    }

    /// This configuration as YAML, every default spelled out (for `check-config --print`).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Parses a quantity a section holds, reporting it at `path` when it does not parse.
fn quantity_problem(bad: &mut dyn FnMut(&str, String), path: &str, value: Option<&str>) -> Option<Quantity> {
    let value = value?;
    match Quantity::parse(value) {
        Ok(q) => Some(q),
        Err(e) => {
            bad(path, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> String {
        match Config::from_yaml(yaml, "test.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert!(matches!(Config::from_yaml("", "x"), Ok(c) if c == Config::default()));
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = problems_of("sidecar:\n  transprt: tcp\n");
        assert!(e.contains("sidecar.transprt") || e.contains("sidecar"), "{e}");
        assert!(e.contains("unknown field `transprt`"), "{e}");
        let e = problems_of("overrides:\n  maxCpu: 2\n  bogus: 1\n");
        assert!(e.contains("overrides"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_values_name_their_path_and_fix() {
        let e = problems_of("sidecar:\n  transport: udp\n");
        assert!(e.contains("sidecar.transport"), "{e}");
        let e = problems_of("sidecar:\n  mtu: 70000\n");
        assert!(e.contains("sidecar.mtu"), "{e}");
        let e = problems_of("sidecar:\n  storage: lots\noverrides:\n  maxMemory: -1\n");
        assert!(e.contains("sidecar.storage") && e.contains("overrides.maxMemory"), "{e}");
        assert!(e.contains("2 problem"), "{e}");
    }

    #[test]
    fn max_connection_age_is_off_or_at_least_100ms() {
        let e = problems_of("server:\n  maxConnectionAge: 50ms\n");
        assert!(e.contains("server.maxConnectionAge") && e.contains("at least 100ms"), "{e}");
        for fine in ["0s", "100ms", "10m"] {
            let c = Config::from_yaml(&format!("server:\n  maxConnectionAge: {fine}\n"), "x");
            assert!(c.is_ok(), "{fine}: {:?}", c.err().map(|e| e.to_string()));
        }
        assert_eq!(Config::default().server.max_connection_age.0, Duration::from_secs(60));
    }

    #[test]
    fn daemon_json_conflicting_with_flags_is_rejected() {
        let e = problems_of("daemon:\n  settings:\n    hosts: [\"tcp://0.0.0.0:2375\"]\n    mtu: 1400\n");
        assert!(e.contains("daemon.settings.hosts"), "{e}");
        assert!(e.contains("daemon.settings.mtu") && e.contains("sidecar.mtu"), "{e}");
    }

    #[test]
    fn unknown_daemon_keys_are_advised_and_removed_ones_refused() {
        let e = problems_of("daemon:\n  settings:\n    cluster-store: consul://x\n");
        assert!(e.contains("daemon.settings.cluster-store"), "{e}");
        let c = Config::from_yaml("daemon:\n  settings:\n    log-level: warn\n    made-up: 1\n", "x");
        let advice = c.map(|c| c.advisories()).unwrap_or_default();
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].path, "daemon.settings.made-up");
    }

    #[test]
    fn mtu_and_intervals_parse() {
        let c = Config::from_yaml("sidecar:\n  mtu: 1400\n  startupTimeout: 90s\nserver:\n  reloadInterval: 250ms\n", "x");
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.sidecar.mtu, Mtu::Fixed(1400));
        assert_eq!(c.sidecar.startup_timeout.0, Duration::from_secs(90));
        assert_eq!(c.server.reload_interval.0, Duration::from_millis(250));
        assert!(Interval::parse("5").is_err());
        assert!(Interval::parse("5h").is_err());
    }

    #[test]
    fn defaults_round_trip_through_yaml() {
        let yaml = Config::default().to_yaml();
        assert!(matches!(Config::from_yaml(&yaml, "x"), Ok(c) if c == Config::default()), "{yaml}");
    }
}
