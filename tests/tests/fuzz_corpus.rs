//! Replays the committed fuzz corpora through the fuzz-target bodies on stable Rust, so CI runs
//! every target's code without a nightly toolchain.

use cypherwire_test_support::{corpus, fuzz};

fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus::load(target).unwrap_or_else(|e| panic!("corpus {target}: {e}"));
    assert!(
        files.len() >= 10,
        "corpus {target} has only {} files",
        files.len()
    );
    for (name, data) in &files {
        let outcome = std::panic::catch_unwind(|| body(data));
        assert!(
            outcome.is_ok(),
            "{target}: input {name} triggered a finding"
        );
    }
}

#[test]
fn frame_envelope_corpus() {
    replay("frame_envelope", fuzz::frame_envelope);
}

#[test]
fn payload_value_corpus() {
    replay("payload_value", fuzz::payload_value);
}
