//! The `admission.k8s.io/v1` AdmissionReview wire format, read and written by hand.
//!
//! kube-core has these types, but its response serialises the patch as a JSON array of bytes
//! (kube-rs/kube#1781) and its request parses the object eagerly. Here the object stays raw JSON
//! until the kind is known, the patch is base64 as the API documents, and a body that cannot be
//! read still yields the request's uid when one can be found, so the answer names the review.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// Group, version and kind of the reviewed object.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// The request part of an AdmissionReview. The object stays unparsed (`O` is raw JSON) unless
/// it is read in the same pass ([`decode_pod_review`]); the old object always stays raw.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionRequest<O = Box<RawValue>> {
    /// Echoed in the response.
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// The subresource (`ephemeralcontainers`), if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name (absent for `generateName` creates).
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    /// The object as it would be stored.
    #[serde(default)]
    pub object: Option<O>,
    /// The object as it was (UPDATE, DELETE).
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    /// Whether this is a dry run.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl<O> AdmissionRequest<O> {
    /// Whether the object is a core/v1 Pod (the pod itself, not a subresource).
    pub fn is_pod(&self) -> bool {
        self.kind.group.is_empty() && self.kind.version == "v1" && self.kind.kind == "Pod"
    }
}

/// Why a body is not a usable AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON at all.
    #[error("the request body is not JSON ({0}); the apiserver sends an AdmissionReview as JSON")]
    NotJson(serde_json::Error),
    /// JSON, but not an AdmissionReview.
    #[error("the request body is a {found}, not an AdmissionReview; point only webhook configurations at this endpoint")]
    WrongKind {
        /// The `kind` found.
        found: String,
    },
    /// An AdmissionReview of another version.
    #[error("AdmissionReview {found} is not served; set admissionReviewVersions: [\"v1\"] in the webhook configuration")]
    WrongVersion {
        /// The `apiVersion` found.
        found: String,
    },
    /// No `request`.
    #[error("the AdmissionReview has no `request`; the apiserver always sends one")]
    MissingRequest,
    /// The fields do not have the AdmissionReview's shape.
    #[error("the AdmissionReview is malformed: {0}")]
    Malformed(serde_json::Error),
}

impl ReviewError {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReviewError::NotJson(_) => "not-json",
            ReviewError::WrongKind { .. } => "wrong-kind",
            ReviewError::WrongVersion { .. } => "wrong-version",
            ReviewError::MissingRequest => "missing-request",
            ReviewError::Malformed(_) => "malformed",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct WholeReview<O> {
    api_version: String,
    kind: String,
    request: AdmissionRequest<O>,
}

/// Reads an AdmissionReview v1 whose object is a pod in one pass over the body, the pod read
/// as `O` reads it ([`crate::pod::Decoded`], [`crate::pod::ForMutation`]; [`decode_review`]
/// keeps any object as raw JSON). `None` when anything does not read (not a review, not v1, an
/// object that is not a readable pod): [`decode_review`] then says what.
pub fn decode_pod_review<O: serde::de::DeserializeOwned>(body: &[u8]) -> Option<AdmissionRequest<O>> {
    // The body checked as UTF-8 once, then read as text: reading bytes, serde_json checks each
    // string on its own, which cost a tenth of `/validate`.
    let text = std::str::from_utf8(body).ok()?;
    let review = serde_json::from_str::<WholeReview<O>>(text).ok()?;
    (review.kind == "AdmissionReview" && review.api_version == API_VERSION).then_some(review.request)
}

/// Reads an AdmissionReview v1 request body. A well-formed review is read in one pass; anything
/// else is read again, step by step, to say exactly what is wrong.
pub fn decode_review(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    // The same one pass, with the object kept as raw JSON.
    match decode_pod_review::<Box<RawValue>>(body) {
        Some(request) => Ok(request),
        None => diagnose(body),
    }
}

fn diagnose(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let review: ReviewIn = serde_json::from_slice(body)
        .map_err(|e| if e.is_syntax() || e.is_eof() { ReviewError::NotJson(e) } else { ReviewError::Malformed(e) })?;
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => {
            return Err(ReviewError::WrongKind { found: other.map_or_else(|| "document without `kind`".into(), |k| format!("`{k}`")) });
        }
    }
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ReviewError::WrongVersion { found: other.unwrap_or("(no apiVersion)").to_owned() }),
    }
    let request = review.request.ok_or(ReviewError::MissingRequest)?;
    serde_json::from_str(request.get()).map_err(ReviewError::Malformed)
}

/// Digs the request uid out of a body that failed to decode, so the error answer can carry it.
pub fn recover_uid(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        request: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        uid: Option<String>,
    }
    serde_json::from_slice::<Outer>(body).ok()?.request?.uid.filter(|u| !u.is_empty() && u.len() <= 128)
}

/// A `metav1.Status` carried in a denial or error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// HTTP-like code (403 for a denial, 400 for a bad request).
    pub code: u16,
    /// The message shown to the user.
    pub message: String,
}

/// The response part of an AdmissionReview.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why not, or what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The JSON Patch, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` when a patch is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Warnings shown to the client (`kubectl` prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Written into the audit event.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl AdmissionResponse {
    /// Allows the request unchanged.
    pub fn allow(uid: impl Into<String>) -> Self {
        AdmissionResponse {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Denies the request with `code` and `message`.
    pub fn deny(uid: impl Into<String>, code: u16, message: impl Into<String>) -> Self {
        AdmissionResponse { allowed: false, status: Some(Status { code, message: message.into() }), ..AdmissionResponse::allow(uid) }
    }

    /// Attaches a JSON Patch (an empty one attaches nothing).
    pub fn with_patch(mut self, patch: &crate::inject::Patch) -> Self {
        if !patch.is_empty() {
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch.as_json()));
            self.patch_type = Some("JSONPatch");
        }
        self
    }

    /// Adds warnings.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    /// Wraps the response in an AdmissionReview and serialises it.
    pub fn into_review_json(self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut {
            api_version: &'static str,
            kind: &'static str,
            response: AdmissionResponse,
        }
        serde_json::to_vec(&ReviewOut { api_version: API_VERSION, kind: "AdmissionReview", response: self }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_real_review_and_keeps_the_object_raw() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ci","object":{"kind":"Pod","spec":{}},"oldObject":null}}"#;
        let req = decode_review(body).map_err(|e| e.to_string());
        let req = req.as_ref().map_err(String::as_str);
        assert!(matches!(req, Ok(r) if r.uid == "u1" && r.is_pod() && r.object.is_some() && r.old_object.is_none()));
    }

    #[test]
    fn each_bad_body_gets_its_own_error() {
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "not-json"),
            // Not UTF-8 inside a string: read as text after one check of the whole body.
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\xff\"}}", "not-json"),
            (br#"{"apiVersion":"v1","kind":"Pod"}"#, "wrong-kind"),
            (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#, "wrong-version"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "missing-request"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#, "malformed"),
        ];
        for (body, label) in cases {
            assert!(decode_pod_review::<Box<RawValue>>(body).is_none(), "{label}");
            match decode_review(body) {
                Err(e) => assert_eq!(e.metric_label(), label, "{e}"),
                Ok(_) => panic!("{label} decoded"),
            }
        }
    }

    #[test]
    fn uid_is_recovered_from_a_review_that_does_not_decode() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"abc"}}"#;
        assert_eq!(recover_uid(body).as_deref(), Some("abc"));
        assert_eq!(recover_uid(b"garbage"), None);
    }

    #[test]
    fn patch_is_base64_and_typed() {
        let mut builder = crate::inject::PatchBuilder::default();
        builder.add(&["a"], &1);
        let patch = builder.build();
        let empty = AdmissionResponse::allow("u").with_patch(&crate::inject::Patch::default()).into_review_json();
        let v: serde_json::Value = serde_json::from_slice(&empty).unwrap_or_default();
        assert!(v["response"].get("patch").is_none() && v["response"].get("patchType").is_none(), "{v}");
        let json = AdmissionResponse::allow("u").with_patch(&patch).into_review_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(v["response"]["patch"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(decoded, br#"[{"op":"add","path":"/a","value":1}]"#);
        assert_eq!(v["response"]["uid"], "u");
        assert_eq!(v["apiVersion"], API_VERSION);
    }
}
