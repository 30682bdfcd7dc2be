//! Fuzzes the mutating review (`webhook::mutate`) in three namespace and cluster contexts; see common.rs for what is checked.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check_mutate(data));
