//! Fuzzes the validating review (`webhook::validate`), of the body and of the pod as injected; see common.rs for what is checked.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check_validate(data));
