#![no_main]
// A bare payload decoded as a Value in both codecs, with the round-trip invariant.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cypherwire_test_support::fuzz::payload_value(data));
