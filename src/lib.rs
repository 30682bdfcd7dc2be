//! dind-injector: a Kubernetes admission webhook that gives CI job pods a Docker daemon.
//!
//! The core ([`inject`], [`config`], [`admission`], [`webhook`]) is pure: plain functions from a
//! pod, a [`namespace::NamespaceView`] and a [`config::Config`] to a JSON Patch, warnings and a
//! verdict. The edges ([`server`], [`cli`]) do the IO and call into it.
//!
//! Every dependency points down this list (a module uses only modules above it or beside it in
//! its own row, and never in a circle; `tests/layering.rs` checks it):
//!
//! 1. foundations: [`quantity`], [`names`], [`image`], [`yaml`], [`annotations`], [`certs`]
//! 2. what is read off the cluster's objects: [`status`] (the status annotation's record and the
//!    sidecar fingerprint), [`pod`] (the lean decoder), [`namespace`]
//! 3. [`config`]: the configuration file, every section of it (the Pod Security [`config::Level`]
//!    included)
//! 4. [`inject`]: the injection decision and its patch
//! 5. [`policy`]: Pod Security and the narrowed exemption
//! 6. [`admission`], [`webhook`]: AdmissionReviews in, responses out
//! 7. the edges: [`cluster`], [`server`], [`cli`]

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod image;
pub mod inject;
pub mod names;
pub mod namespace;
pub mod pod;
pub mod policy;
pub mod quantity;
pub mod server;
pub mod status;
pub mod webhook;
pub mod yaml;
