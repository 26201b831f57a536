//! The official Fernet spec vectors (`docs/test-vectors/fernet/`): generate, verify, invalid.

#![allow(clippy::unwrap_used, reason = "test code")]

use cypherwire_session::Error;
use cypherwire_session::fernet::FernetKey;
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/../../docs/test-vectors/fernet/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Parses `YYYY-MM-DDTHH:MM:SS±HH:MM` into Unix seconds.
fn unix(ts: &str) -> u64 {
    let n = |a: usize, b: usize| ts[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let secs = n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let tz = &ts[19..];
    let off = (tz[1..3].parse::<i64>().unwrap() * 3600 + tz[4..6].parse::<i64>().unwrap() * 60)
        * if tz.starts_with('-') { -1 } else { 1 };
    // Days from civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + secs - off).unwrap()
}

#[test]
fn generate_vectors() {
    let cases = load("generate.json");
    assert!(!cases.is_empty());
    for c in cases {
        let key = FernetKey::from_base64(c["secret"].as_str().unwrap()).unwrap();
        let iv: Vec<u8> = c["iv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let token = key.encrypt_with_iv(
            c["src"].as_str().unwrap().as_bytes(),
            unix(c["now"].as_str().unwrap()),
            iv.try_into().unwrap(),
        );
        assert_eq!(token, c["token"].as_str().unwrap());
    }
}

#[test]
fn verify_vectors() {
    let cases = load("verify.json");
    assert!(!cases.is_empty());
    for c in cases {
        let key = FernetKey::from_base64(c["secret"].as_str().unwrap()).unwrap();
        let plain = key
            .decrypt(
                c["token"].as_str().unwrap().as_bytes(),
                unix(c["now"].as_str().unwrap()),
                c["ttl_sec"].as_u64(),
            )
            .unwrap();
        assert_eq!(plain, c["src"].as_str().unwrap().as_bytes());
    }
}

#[test]
fn invalid_vectors_all_fail_with_the_same_error() {
    let cases = load("invalid.json");
    assert_eq!(cases.len(), 11);
    for c in cases {
        let key = FernetKey::from_base64(c["secret"].as_str().unwrap()).unwrap();
        let res = key.decrypt(
            c["token"].as_str().unwrap().as_bytes(),
            unix(c["now"].as_str().unwrap()),
            c["ttl_sec"].as_u64(),
        );
        assert!(
            matches!(res, Err(Error::InvalidToken)),
            "{}: {res:?}",
            c["desc"]
        );
    }
}

#[test]
fn date_parser_is_right() {
    assert_eq!(unix("1970-01-01T00:00:00+00:00"), 0);
    assert_eq!(unix("1985-10-26T01:20:00-07:00"), 499_162_800);
}
