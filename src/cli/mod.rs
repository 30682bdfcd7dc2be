//! The command line: `serve`, `inject`, `explain`, `certs`, `check-config`, `version`.

mod workloads;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::inject::{self, ClusterInfo, Outcome};
use crate::namespace::{NamespaceView, parse_key_values};

pub use workloads::{InjectReport, inject_documents};

/// The largest manifest `inject` and `explain` read.
pub const MAX_INPUT_BYTES: u64 = 32 * 1024 * 1024;

/// Gives CI job pods a Docker daemon: a Kubernetes admission webhook and its offline tools.
#[derive(Debug, Parser)]
#[command(name = "dind-injector", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Serve(crate::server::ServeArgs),
    /// Inject the sidecar into Pods and workload pod templates offline (YAML in, YAML out).
    Inject(InjectArgs),
    /// Say whether each pod would be injected, why, and what would be added.
    Explain(InjectArgs),
    /// Write a development CA and a serving certificate for 127.0.0.1 and localhost.
    Certs(crate::certs::CertsArgs),
    /// Validate a configuration file and say what is wrong, where.
    CheckConfig(CheckConfigArgs),
    /// Print the version.
    Version,
}

/// Options shared by `inject` and `explain`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifest to read (`-` for standard input). Multi-document YAML or JSON.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The configuration.
    #[command(flatten)]
    pub config: ConfigArg,
    /// The namespace stand-ins.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

/// The configuration file option.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file (defaults for every field when absent).
    #[arg(long = "config", env = "DIND_INJECTOR_CONFIG", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl ConfigArg {
    /// Loads the configuration, or the defaults.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        match &self.path {
            Some(p) => Config::load(p),
            None => Ok(Config::default()),
        }
    }
}

/// Stand-ins for the namespace the cluster would describe.
#[derive(Debug, Args)]
pub struct NamespaceArgs {
    /// The namespace's labels as key=value,…; by default it is opted in and privileged.
    #[arg(long, value_name = "K=V,…")]
    pub namespace_labels: Option<String>,
    /// The namespace's annotations as key=value,… (namespace-wide override defaults).
    #[arg(long, value_name = "K=V,…")]
    pub namespace_annotations: Option<String>,
    /// The apiserver version (`1.28`), for `sidecar-mode: auto`.
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub kubernetes_version: Option<String>,
    /// The cluster's RuntimeClasses (`sysbox-runc,kata`), to check the isolation modes against;
    /// not checked without it.
    #[arg(long, value_name = "NAME,…")]
    pub runtime_classes: Option<String>,
}

impl NamespaceArgs {
    /// The namespace view for namespace `name`.
    pub fn view(&self, name: &str) -> Result<NamespaceView, String> {
        let mut view = NamespaceView::opted_in(name);
        if let Some(l) = &self.namespace_labels {
            view.labels = parse_key_values(l).map_err(|e| format!("--namespace-labels: {e}"))?;
        }
        if let Some(a) = &self.namespace_annotations {
            view.annotations = parse_key_values(a).map_err(|e| format!("--namespace-annotations: {e}"))?;
        }
        Ok(view)
    }

    /// What is known about the cluster.
    pub fn cluster(&self) -> Result<ClusterInfo, String> {
        let runtime_classes = match &self.runtime_classes {
            None => inject::RuntimeClasses::NotChecked,
            Some(list) => inject::RuntimeClasses::Known(std::sync::Arc::new(
                list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect(),
            )),
        };
        let Some(v) = &self.kubernetes_version else {
            return Ok(ClusterInfo { runtime_classes, ..ClusterInfo::default() });
        };
        let bad = || format!("--kubernetes-version: {v:?} is not MAJOR.MINOR (like 1.30)");
        let (major, minor) = v.trim_start_matches('v').split_once('.').ok_or_else(bad)?;
        let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
        Ok(ClusterInfo {
            server_version: Some(inject::KubeVersion {
                major: major.parse().map_err(|_| bad())?,
                minor: minor.parse().map_err(|_| bad())?,
            }),
            runtime_classes,
        })
    }
}

/// Options of `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file.
    pub file: PathBuf,
    /// Also print the configuration with every default filled in, and the daemon.json it makes.
    #[arg(long)]
    pub print: bool,
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(args) => crate::server::serve(args),
        Command::Certs(args) => crate::certs::run(&args),
        Command::Inject(args) => run_inject(&args),
        Command::Explain(args) => run_explain(&args),
        Command::CheckConfig(args) => Ok(check_config(&args)),
        Command::Version => {
            println!("dind-injector {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_input(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    let limit = MAX_INPUT_BYTES + 1;
    let read = if path == Path::new("-") {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("{} is larger than {MAX_INPUT_BYTES} bytes; split it", path.display()));
    }
    Ok(text)
}

fn run_inject(args: &InjectArgs) -> Result<ExitCode, String> {
    let config = args.config.load().map_err(|e| e.to_string())?;
    let cluster = args.namespace.cluster()?;
    let text = read_input(&args.file)?;
    let (yaml, reports) = inject_documents(&text, &config, &cluster, &|ns| args.namespace.view(ns))?;
    let mut err = std::io::stderr().lock();
    for r in &reports {
        let _ = writeln!(err, "{}: {}", r.object, r.summary());
        for w in &r.warnings {
            let _ = writeln!(err, "  warning: {w}");
        }
    }
    std::io::stdout().lock().write_all(yaml.as_bytes()).map_err(|e| format!("cannot write the output: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn run_explain(args: &InjectArgs) -> Result<ExitCode, String> {
    let config = args.config.load().map_err(|e| e.to_string())?;
    let cluster = args.namespace.cluster()?;
    let text = read_input(&args.file)?;
    let (_, reports) = inject_documents(&text, &config, &cluster, &|ns| args.namespace.view(ns))?;
    let mut out = String::new();
    for r in &reports {
        out.push_str(&r.explain(&config));
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn check_config(args: &CheckConfigArgs) -> ExitCode {
    match Config::load(&args.file) {
        Ok(config) => {
            println!("{}: valid", args.file.display());
            for advice in config.advisories() {
                println!("  note: {advice}");
            }
            if args.print {
                println!("---\n# effective configuration, every default filled in\n{}", config.to_yaml());
                println!(
                    "# daemon.json kept in the {} ConfigMap\n{}",
                    config.sidecar.daemon_config_map,
                    inject::daemon_json_text(&config.daemon)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the decision injected, for reports.
pub(crate) fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Inject(_) => "injected",
        Outcome::Skip(_) => "not injected",
    }
}

/// Labels for reports: `key=value` pairs sorted.
pub(crate) fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
