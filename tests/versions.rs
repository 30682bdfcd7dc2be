//! One version number: Cargo.toml's. The chart's `version` and `appVersion`, the image tag the
//! manifests install (the base Deployment and its kustomization), every overlay as rendered, and
//! the image `make image` and the release workflow publish all carry it, so a release tag names
//! exactly one thing (the release workflow checks the tag against Cargo.toml).

mod support;

use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE: &str = "ghcr.io/dind-injector/dind-injector";

fn read(path: &str) -> String {
    let p = support::repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_chart_the_manifests_and_the_image_carry_cargos_version() {
    let chart = yaml("charts/dind-injector/Chart.yaml");
    assert_eq!(chart["version"], VERSION, "charts/dind-injector/Chart.yaml version");
    assert_eq!(chart["appVersion"], VERSION, "charts/dind-injector/Chart.yaml appVersion");

    let kustomization = yaml("manifests/base/kustomization.yaml");
    let images = kustomization["images"].as_array().cloned().unwrap_or_default();
    let ours: Vec<&Value> = images.iter().filter(|i| i["name"] == IMAGE).collect();
    assert_eq!(ours.len(), 1, "manifests/base/kustomization.yaml names {IMAGE} once: {images:?}");
    assert_eq!(ours[0]["newTag"], VERSION, "manifests/base/kustomization.yaml newTag");
    let deployment = read("manifests/base/deployment.yaml");
    assert!(deployment.contains(&format!("image: {IMAGE}:{VERSION}")), "manifests/base/deployment.yaml installs {IMAGE}:{VERSION}");

    // What a user applies: every overlay, rendered.
    for overlay in ["self-managed", "cert-manager"] {
        let rendered = support::render::kustomize(&format!("manifests/overlays/{overlay}"));
        let refs: Vec<&str> =
            rendered.match_indices(IMAGE).map(|(i, _)| &rendered[i..]).map(|s| s.split_whitespace().next().unwrap_or("")).collect();
        assert!(!refs.is_empty(), "overlay {overlay} installs no {IMAGE}");
        for r in refs {
            assert_eq!(r.trim_matches('"'), format!("{IMAGE}:{VERSION}"), "overlay {overlay}");
        }
    }

    // What make image builds and the README tells people to pull.
    assert!(
        read("scripts/image.sh").contains(r#"ref="ghcr.io/dind-injector/dind-injector:$version""#),
        "scripts/image.sh tags with Cargo.toml's version"
    );
    let readme = read("README.md");
    for (i, _) in readme.match_indices(&format!("{IMAGE}:")) {
        let tag: String =
            readme[i + IMAGE.len() + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
        if tag.starts_with(|c: char| c.is_ascii_digit()) {
            assert_eq!(tag, VERSION, "README.md names {IMAGE}:{tag}");
        }
    }
}
