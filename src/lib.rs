//! dind-injector: a Kubernetes admission webhook that gives CI job pods a Docker daemon.
//!
//! The core ([`inject`], [`config`], [`admission`], [`webhook`]) is pure: plain functions from a
//! pod, a [`namespace::NamespaceView`] and a [`config::Config`] to a JSON Patch, warnings and a
//! verdict. The edges ([`server`], [`cli`]) do the IO and call into it.

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
pub mod webhook;
pub mod yaml;
