//! JSON Patch operations built with care: a parent is added before anything is added into it,
//! and keys are escaped (`/` as `~1`, `~` as `~0`).
//!
//! The patch is written as JSON text while it is built: each value (the sidecar, its volumes,
//! the job containers' env and mounts) is serialized once, straight from its typed struct, into
//! the bytes the admission response carries. Nothing goes through a `serde_json::Value`, which
//! would allocate every key and string of the sidecar a second time (issue 11). Tests and the
//! CLI, which apply the patch to a pod, read it back with [`Patch::to_json_patch`].

use std::fmt;

use serde::Serialize;

/// A JSON Patch of `add` operations, as the JSON text the apiserver receives.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Patch {
    /// `[{"op":"add","path":...,"value":...},...]`, or empty when there is no operation.
    json: Vec<u8>,
    ops: usize,
}

impl Patch {
    /// Whether the patch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// How many operations the patch has.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// The patch as a JSON document (`[]` when it is empty).
    pub fn as_json(&self) -> &[u8] {
        if self.ops == 0 { b"[]" } else { &self.json }
    }

    /// The patch read back as `json_patch` operations, to apply to a pod. The text is the
    /// builder's own serialization, so it always reads back; an error would be a bug here.
    pub fn to_json_patch(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(self.as_json())
    }
}

impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_json()))
    }
}

/// Writes `add` operations into a [`Patch`].
#[derive(Debug)]
pub struct PatchBuilder {
    patch: Patch,
    /// The pointer being written (reused between operations).
    path: String,
}

impl Default for PatchBuilder {
    /// Room for a usual injection's patch (about 3 KiB for the GitLab pod) without growing.
    fn default() -> Self {
        PatchBuilder { patch: Patch { json: Vec::with_capacity(4096), ops: 0 }, path: String::with_capacity(64) }
    }
}

impl PatchBuilder {
    /// Starts an operation at `tokens` (then `last`, when given) and returns where its value
    /// begins.
    fn start(&mut self, tokens: &[&str], last: Option<&str>) -> usize {
        self.path.clear();
        for token in tokens.iter().copied().chain(last) {
            self.path.push('/');
            for c in token.chars() {
                match c {
                    '~' => self.path.push_str("~0"),
                    '/' => self.path.push_str("~1"),
                    c => self.path.push(c),
                }
            }
        }
        let json = &mut self.patch.json;
        json.push(if self.patch.ops == 0 { b'[' } else { b',' });
        json.extend_from_slice(br#"{"op":"add","path":"#);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *json, self.path.as_str());
        json.extend_from_slice(br#","value":"#);
        json.len()
    }

    /// Ends the operation whose value began at `value_at`.
    fn finish(&mut self, value_at: usize, written: serde_json::Result<()>) {
        if written.is_err() {
            // The Kubernetes types always serialize; a failure would be a bug, and yields null.
            self.patch.json.truncate(value_at);
            self.patch.json.extend_from_slice(b"null");
        }
        self.patch.json.push(b'}');
        self.patch.ops += 1;
    }

    /// Adds `value` at `tokens`.
    pub fn add<T: Serialize + ?Sized>(&mut self, tokens: &[&str], value: &T) {
        self.add_at(tokens, None, value);
    }

    /// Adds `value` at `tokens`, then `last`.
    fn add_at<T: Serialize + ?Sized>(&mut self, tokens: &[&str], last: Option<&str>, value: &T) {
        let at = self.start(tokens, last);
        let written = serde_json::to_writer(&mut self.patch.json, value);
        self.finish(at, written);
    }

    /// Appends `items` to the array at `tokens`, creating the array when `exists` is false.
    pub fn append<T: Serialize>(&mut self, tokens: &[&str], exists: bool, items: &[T]) {
        if items.is_empty() {
            return;
        }
        if !exists {
            self.add(tokens, items);
            return;
        }
        for item in items {
            self.add_at(tokens, Some("-"), item);
        }
    }

    /// Sets `key` in the map at `tokens`, creating the map when `exists` is false.
    pub fn insert<T: Serialize + ?Sized>(&mut self, tokens: &[&str], exists: bool, key: &str, value: &T) {
        if exists {
            self.add_at(tokens, Some(key), value);
        } else {
            self.add(tokens, &OneEntry { key, value });
        }
    }

    /// The patch.
    pub fn build(mut self) -> Patch {
        if self.patch.ops > 0 {
            self.patch.json.push(b']');
        }
        self.patch
    }
}

/// A map of one entry, serialized without building a map.
struct OneEntry<'a, T: ?Sized> {
    key: &'a str,
    value: &'a T,
}

impl<T: Serialize + ?Sized> Serialize for OneEntry<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.key, self.value)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ops(b: PatchBuilder) -> Value {
        serde_json::from_slice(b.build().as_json()).unwrap_or_else(|e| panic!("not JSON: {e}"))
    }

    #[test]
    fn keys_with_slashes_are_escaped_and_parents_created() {
        let mut b = PatchBuilder::default();
        b.insert(&["metadata", "annotations"], true, "dind-injector.io/status", "x");
        b.insert(&["metadata", "labels"], false, "a~b", "y");
        b.append(&["spec", "volumes"], true, &[1, 2]);
        b.append(&["spec", "hostAliases"], false, &["docker"]);
        b.append::<u8>(&["spec", "nothing"], false, &[]);
        assert_eq!(
            ops(b),
            json!([
                {"op": "add", "path": "/metadata/annotations/dind-injector.io~1status", "value": "x"},
                {"op": "add", "path": "/metadata/labels", "value": {"a~b": "y"}},
                {"op": "add", "path": "/spec/volumes/-", "value": 1},
                {"op": "add", "path": "/spec/volumes/-", "value": 2},
                {"op": "add", "path": "/spec/hostAliases", "value": ["docker"]},
            ])
        );
    }

    #[test]
    fn quotes_and_control_characters_in_keys_stay_valid_json() {
        let mut b = PatchBuilder::default();
        b.insert(&["metadata", "annotations"], true, "a\"b\\c\n~/", "v");
        let patch = b.build();
        let ops = patch.to_json_patch().unwrap_or_else(|e| panic!("{e}: {patch:?}"));
        let mut pod = json!({"metadata": {"annotations": {}}});
        json_patch::patch(&mut pod, &ops.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pod["metadata"]["annotations"]["a\"b\\c\n~/"], "v");
    }

    #[test]
    fn an_empty_patch_is_an_empty_document() {
        let patch = PatchBuilder::default().build();
        assert!(patch.is_empty());
        assert_eq!(patch.as_json(), b"[]");
        assert_eq!(patch.to_json_patch().map(|p| p.0.len()).ok(), Some(0));
    }

    #[test]
    fn a_value_that_fails_to_serialize_becomes_null_and_the_patch_stays_valid() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut b = PatchBuilder::default();
        b.add(&["a"], &Fails);
        b.add(&["b"], &1);
        assert_eq!(ops(b), json!([{"op": "add", "path": "/a", "value": null}, {"op": "add", "path": "/b", "value": 1}]));
    }
}
