//! Committed fuzz corpora.

use std::io;
use std::path::Path;

use crate::workspace_root;

/// Every file of `fuzz/corpus/<target>/`, as `(file name, contents)`, sorted by name.
///
/// # Errors
/// Any I/O error reading the directory (a missing corpus is an error: the replay tests must
/// not pass vacuously).
pub fn load(target: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
    load_dir(&workspace_root().join("fuzz/corpus").join(target))
}

fn load_dir(dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push((name, std::fs::read(entry.path())?));
        }
    }
    out.sort();
    Ok(out)
}
