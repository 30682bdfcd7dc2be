//! JSON Patch operations built with care: a parent is added before anything is added into it,
//! and keys are escaped (`/` as `~1`, `~` as `~0`) by the pointer type.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde::Serialize;
use serde_json::Value;

/// Collects `add` operations.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// Any value of the Kubernetes types serialises; a failure would be a bug, and yields `null`.
pub fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl PatchBuilder {
    /// Adds `value` at `tokens`.
    pub fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: pointer(tokens),
            value,
        }));
    }

    /// Appends `items` to the array at `tokens`, creating the array when `exists` is false.
    pub fn append(&mut self, tokens: &[&str], exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if !exists {
            self.add(tokens, Value::Array(items));
            return;
        }
        let mut end: Vec<&str> = tokens.to_vec();
        end.push("-");
        for item in items {
            self.add(&end, item);
        }
    }

    /// Sets `key` in the map at `tokens`, creating the map when `exists` is false.
    pub fn insert(&mut self, tokens: &[&str], exists: bool, key: &str, value: Value) {
        if exists {
            let mut path = tokens.to_vec();
            path.push(key);
            self.add(&path, value);
        } else {
            let mut map = serde_json::Map::new();
            map.insert(key.to_owned(), value);
            self.add(tokens, Value::Object(map));
        }
    }

    /// The patch.
    pub fn build(self) -> Patch {
        Patch(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_slashes_are_escaped_and_parents_created() {
        let mut b = PatchBuilder::default();
        b.insert(&["metadata", "annotations"], true, "dind-injector.io/status", Value::from("x"));
        b.insert(&["metadata", "labels"], false, "a~b", Value::from("y"));
        b.append(&["spec", "volumes"], true, vec![Value::from(1), Value::from(2)]);
        let text = serde_json::to_string(&b.build()).unwrap_or_default();
        assert!(text.contains("/metadata/annotations/dind-injector.io~1status"), "{text}");
        assert!(text.contains(r#""path":"/metadata/labels","value":{"a~b":"y"}"#), "{text}");
        assert_eq!(text.matches("/spec/volumes/-").count(), 2, "{text}");
    }
}
