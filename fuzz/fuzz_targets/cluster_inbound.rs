#![no_main]
// Body shared with the stable corpus replay in tests/tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cypherwire_test_support::fuzz::cluster_inbound(data));
