#!/usr/bin/env python3
"""Checks that every test named in docs/protocol.md's conformance table (appendix B) exists.

Reads the table's backticked names (`crate::binary test` or `crate module::tests::name`, with
the `cypherwire-` prefix of crate names left off) and compares them with what
`cargo nextest list --workspace --all-features` lists. Exits non-zero naming each missing test,
so renaming or deleting a test cannot silently leave the table pointing at nothing.
"""
import re
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
spec = (root / "docs" / "protocol.md").read_text(encoding="utf-8")
start = spec.find("## B. Conformance")
if start < 0:
    sys.exit("docs/protocol.md has no '## B. Conformance' section")
table = spec[start:]
named = set()
for line in table.splitlines():
    if not line.startswith("| §"):
        continue
    checked_by = line.rstrip().rstrip("|").split("|")[-1]
    for name in re.findall(r"`([^`]+)`", checked_by):
        named.add(name)
if not named:
    sys.exit("the conformance table names no tests")

listed = subprocess.run(
    ["cargo", "nextest", "list", "--workspace", "--all-features"],
    cwd=root, check=True, capture_output=True, text=True,
).stdout
present = set()
for line in listed.splitlines():
    parts = line.strip().split(" ", 1)
    if len(parts) == 2:
        binary, test = parts
        present.add(f"{binary.removeprefix('cypherwire-')} {test}")

missing = sorted(n for n in named if n not in present)
for name in missing:
    print(f"docs/protocol.md appendix B names a test that does not exist: {name}", file=sys.stderr)
print(f"conformance table: {len(named)} tests named, {len(named) - len(missing)} found")
sys.exit(1 if missing else 0)
