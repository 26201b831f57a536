#![no_main]
// Frame + envelope decoding (MessagePack and JSON); the body is shared with the stable corpus
// replay test in tests/tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cypherwire_test_support::fuzz::frame_envelope(data));
