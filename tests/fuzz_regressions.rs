//! Replays saved fuzz inputs under plain `cargo test`: every file in tests/fuzz_regressions/TARGET/
//! (inputs a fuzz target once crashed on), the review fixtures and fuzz/seeds/, and a few hostile
//! bodies written out here, through the checks the fuzz targets make.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir` (none when it does not exist), sorted; dot files are skipped.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// Hostile bodies: nesting far past serde_json's recursion limit (at the top, in `request`, in
/// the object), a byte-order mark, invalid UTF-8, NUL, huge numbers, duplicate keys.
fn hostile() -> Vec<(String, Vec<u8>)> {
    let review = |object: &str| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","namespace":"ci","object":{object}}}}}"#
        )
    };
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let annotated =
        r#"{"metadata":{"annotations":{"dind-injector.io/inject":"true"}},"spec":{"containers":[{"name":"build","image":"alpine"}]"#;
    vec![
        ("100k-deep array".into(), "[".repeat(100_000).into_bytes()),
        ("100k-deep closed array".into(), deep(100_000).into_bytes()),
        ("100k-deep object".into(), "{\"a\":".repeat(100_000).into_bytes()),
        (
            "deep request".into(),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}}"#, deep(100_000)).into_bytes(),
        ),
        ("deep object".into(), review(&deep(100_000)).into_bytes()),
        ("deep unknown pod field".into(), review(&format!("{annotated},\"x\":{}}}}}", deep(100_000))).into_bytes()),
        ("deep annotation value".into(), review(&format!(r#"{{"metadata":{{"annotations":{{"dind-injector.io/inject":{}}}}}}}"#, deep(50_000))).into_bytes()),
        ("byte-order mark".into(), [b"\xef\xbb\xbf".as_slice(), review(&format!("{annotated}}}}}")).as_bytes()].concat()),
        ("invalid UTF-8".into(), review(r#"{"metadata":{"name":"a~~b"}}"#).into_bytes().into_iter().map(|b| if b == b'~' { 0xff } else { b }).collect()),
        ("NUL in a name".into(), review(r#"{"metadata":{"name":"a\u0000b","annotations":{"dind-injector.io/inject":"true"}},"spec":{"containers":[{"name":"b\u0000","image":"alpine"}]}}"#).into_bytes()),
        ("huge numbers".into(), review(r#"{"spec":{"containers":[{"name":"a","image":"b","ports":[{"containerPort":1e999}]}],"securityContext":{"runAsUser":-99999999999999999999999}}}"#).into_bytes()),
        ("duplicate keys".into(), review(r#"{"metadata":{"annotations":{"dind-injector.io/inject":"true"},"annotations":{}},"spec":{"containers":[]},"spec":{"containers":[{"name":"build","image":"alpine"}]}}"#).into_bytes()),
        ("empty".into(), Vec::new()),
        ("null".into(), b"null".to_vec()),
    ]
}

fn replay(check: fn(&[u8]), target: &str) {
    let mut cases = inputs(&root().join("tests/fuzz_regressions").join(target));
    cases.extend(inputs(&root().join("tests/fixtures/reviews")));
    cases.extend(inputs(&root().join("fuzz/seeds")));
    cases.extend(hostile());
    assert!(cases.len() >= 20, "the inputs went missing: {} found", cases.len());
    for (name, bytes) in &cases {
        let result = std::panic::catch_unwind(|| check(bytes));
        assert!(result.is_ok(), "{target}: the input {name:?} fails the fuzz target's checks (see above)");
    }
}

#[test]
fn decode_review_inputs() {
    replay(common::check_decode, "decode_review");
}

#[test]
fn mutate_inputs() {
    replay(common::check_mutate, "mutate");
}

#[test]
fn validate_inputs() {
    replay(common::check_validate, "validate");
}
