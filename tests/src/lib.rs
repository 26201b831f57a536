//! cypherwire's integration tests live in `tests/`; this library holds what the benches of
//! this package share.

/// Helpers shared by the comparative benches (`benches/`).
pub mod bench {
    use std::path::PathBuf;

    /// The resident set size of process `pid` in KiB (0 if it cannot be read).
    pub fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Median, minimum and maximum of `v` (which must not be empty).
    pub fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    }

    /// Writes `rows` (JSON objects) as a JSON array to `target/bench-NAME.json`; returns the
    /// path.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_json(name: &str, rows: &[String]) -> std::io::Result<PathBuf> {
        let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("bench-{name}.json"));
        std::fs::write(&out, format!("[\n{}\n]\n", rows.join(",\n")))?;
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn median_min_max_of_unsorted_figures() {
            assert_eq!(median_min_max(&[3.0, 1.0, 2.0, 5.0, 4.0]), (3.0, 1.0, 5.0));
        }

        #[test]
        fn own_rss_is_read() {
            assert!(rss_kib(std::process::id()) > 0);
            assert_eq!(rss_kib(u32::MAX), 0);
        }
    }
}
