//! Status and close codes as people read them: each defined code by its name, others by
//! number.

use cypherwire_wire::{CloseCode, StatusCode};

#[test]
fn every_defined_status_code_has_its_name_and_others_their_number() {
    let names: Vec<String> = (0..=8).map(|n| StatusCode(n).to_string()).collect();
    assert_eq!(
        names,
        [
            "OK (0)",
            "BAD_REQUEST (1)",
            "NOT_FOUND (2)",
            "INTERNAL (3)",
            "DEADLINE_EXCEEDED (4)",
            "UNAUTHORIZED (5)",
            "UNAVAILABLE (6)",
            "TOO_LARGE (7)",
            "CANCELLED (8)",
        ]
    );
    assert_eq!(StatusCode(9).name(), None);
    assert_eq!(StatusCode(9).to_string(), "status 9");
    assert_eq!(StatusCode(1500).to_string(), "application status 1500");
}

#[test]
fn every_defined_close_code_has_its_name_and_others_their_number() {
    let names: Vec<&str> = (0..=12).filter_map(|n| CloseCode(n).name()).collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(CloseCode::KICKED.to_string(), "KICKED (8)");
    assert_eq!(CloseCode::PUSHES_LOST.to_string(), "PUSHES_LOST (12)");
    assert_eq!(CloseCode(13).to_string(), "close code 13");
}
