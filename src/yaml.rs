//! YAML written for `kubectl`: a reader that follows YAML 1.1 (kubectl, PyYAML, go-yaml v2) must
//! read back exactly the JSON the product means, so every string such a reader would take as a
//! bool, null, number or date is quoted (`"yes"`, `"on"`, `"0777"`, `"1e3"`, `"2001-12-14"`).

use serde::Serialize;

/// Writes `value` as one YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    // `yaml_12: false` (the default) quotes YAML 1.1's bool spellings; the tests read every
    // output back with a YAML 1.1 parser to hold the rest (numbers, nulls, dates) to the same rule.
    serde_saphyr::to_string(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn strings_a_yaml_1_1_reader_would_retype_are_quoted() {
        let tricky = [
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "n",
            "~",
            "null",
            "0777",
            "0x1F",
            "1_000",
            "1:20",
            "1e3",
            ".inf",
            "2001-12-14",
            "true",
            "1.0",
            "<<",
            "",
        ];
        let text = super::to_string(&json!({ "a": tricky })).unwrap_or_default();
        for s in tricky {
            assert!(text.contains(&format!("- \"{s}\"\n")) || text.contains(&format!("- '{s}'\n")), "{s:?} is not quoted:\n{text}");
        }
        let plain = super::to_string(&json!({ "image": "docker:28.5.1-dind" })).unwrap_or_default();
        assert_eq!(plain, "image: docker:28.5.1-dind\n");
    }
}
