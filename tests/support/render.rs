//! The install objects as the real renderers produce them: `kubectl kustomize` for the
//! manifests (every overlay, and the restricted-by-default component), Helm's own engine
//! (helm-python-sdk, in `.venv-helm/`) for the chart with every values set its tests use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::repo_root;

/// `kubectl kustomize` of `dir` (relative to the repository root: kustomize refuses absolute
/// paths), as YAML text.
pub fn kustomize(dir: &str) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = Command::new(&kubectl).arg("kustomize").arg(dir).current_dir(repo_root()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{kubectl} kustomize {dir}`: {e}. These tests need kubectl (it bundles kustomize): install it \
             (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL to its path"
        )
    });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {dir}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("kustomize output is not UTF-8: {e}"))
}

/// The objects of `kubectl kustomize dir`.
pub fn kustomize_objects(dir: &str) -> Vec<Value> {
    let text = kustomize(dir);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{dir}: kustomize output is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `to` as a path relative to `from`.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    to[common..].iter().for_each(|c| path.push(c));
    path
}

/// The overlays under manifests/overlays/, by name.
pub fn overlays() -> Vec<String> {
    let dir = repo_root().join("manifests/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A kustomization in `tmp` (the test's CARGO_TARGET_TMPDIR) that adds the restricted-by-default
/// component to the self-managed overlay, as docs/reliability.md tells users to; returns its
/// directory relative to the repository root, for [`kustomize`].
///
/// Tests in parallel (and other test binaries: the directory is shared) render it while another
/// asks for it: the file is written only when its content differs, and then whole, by renaming a
/// file of this call's own, so `kubectl kustomize` never reads a truncated or half-written one.
pub fn restricted_by_default_overlay(tmp: &Path) -> String {
    let dir = tmp.join("restricted-by-default-overlay");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let root = relative(&dir, &repo_root());
    let overlay = format!(
        "resources:\n- {}\ncomponents:\n- {}\n",
        root.join("manifests/overlays/self-managed").display(),
        root.join("manifests/components/restricted-by-default").display()
    );
    write_whole(&dir.join("kustomization.yaml"), &overlay);
    relative(&repo_root(), &dir).display().to_string()
}

/// Makes `path` hold `content` without a reader ever seeing anything else: nothing is written when
/// it already does; otherwise a temporary file in the same directory is renamed over it.
fn write_whole(path: &Path, content: &str) {
    if std::fs::read_to_string(path).is_ok_and(|now| now == content) {
        return;
    }
    let dir = path.parent().unwrap_or_else(|| panic!("{} has no directory", path.display()));
    let mut file = tempfile::NamedTempFile::new_in(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    std::io::Write::write_all(&mut file, content.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", file.path().display()));
    file.persist(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The Python of the chart tests' virtual environment (`HELM_VENV`, default `.venv-helm`).
fn helm_python() -> PathBuf {
    let venv = std::env::var("HELM_VENV").unwrap_or_else(|_| ".venv-helm".to_owned());
    let python = repo_root().join(venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: the chart is rendered by Helm's engine in the chart tests' virtual environment. \
         Make it with `sh scripts/helm-venv.sh` (make test does this before the Rust tests)",
        python.display()
    );
    python
}

/// The webhook configurations the chart renders with each values set its tests use
/// (tests/helm/test_chart.py `VALUE_SETS`): (values set, configurations).
pub fn chart_webhook_configurations() -> Vec<(String, Vec<Value>)> {
    let python = helm_python();
    let output = Command::new(&python)
        .arg("tests/helm/test_chart.py")
        .arg("--dump-webhooks")
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} tests/helm/test_chart.py: {e}", python.display()));
    assert!(
        output.status.success(),
        "tests/helm/test_chart.py --dump-webhooks failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let sets: serde_json::Map<String, Value> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("tests/helm/test_chart.py --dump-webhooks printed no JSON: {e}"));
    sets.into_iter().map(|(name, objects)| (name, objects.as_array().cloned().unwrap_or_default())).collect()
}

/// Every set of webhook configurations the project ships, with where it comes from:
/// manifests/base/webhooks.yaml as written, every overlay and the restricted-by-default
/// component as kustomize renders them, and the chart with every values set of its tests.
pub fn shipped_webhook_configurations(tmp: &Path) -> Vec<(String, Vec<Value>)> {
    let webhooks = |objects: Vec<Value>| -> Vec<Value> {
        objects
            .into_iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration")))
            .collect()
    };
    let base = repo_root().join("manifests/base/webhooks.yaml");
    let text = std::fs::read_to_string(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    let mut out = vec![("manifests/base/webhooks.yaml".to_owned(), webhooks(docs))];
    for overlay in overlays() {
        let dir = format!("manifests/overlays/{overlay}");
        out.push((format!("kubectl kustomize {dir}"), webhooks(kustomize_objects(&dir))));
    }
    let component = restricted_by_default_overlay(tmp);
    out.push(("self-managed + components/restricted-by-default".to_owned(), webhooks(kustomize_objects(&component))));
    for (set, objects) in chart_webhook_configurations() {
        out.push((format!("charts/dind-injector, values {set:?}"), objects));
    }
    out
}
