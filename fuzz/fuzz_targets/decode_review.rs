//! Fuzzes AdmissionReview decoding (`admission::decode_review`, `recover_uid`); see common.rs for what is checked.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check_decode(data));
