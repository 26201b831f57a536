#!/usr/bin/env python3
"""Runs every cargo-fuzz target for a bounded time on stable Rust and reports what it saw.

    python3 scripts/fuzz-all.py --seconds 30              # what .ci/run does
    python3 scripts/fuzz-all.py --seconds 3600 --merge    # the soak: an hour per target

Each target runs `cargo fuzz run -s none TARGET WORK/TARGET fuzz/corpus/TARGET`: libFuzzer
reads both directories and writes new inputs only into the first, so the committed corpus
stays as it is unless `--merge` asks for the new inputs that add coverage to be merged into
it afterwards (`-merge=1`). Crash inputs go to `WORK/artifacts/TARGET/`. The script prints
one line per target (runs, exec/s, coverage edges, features, corpus size, peak RSS) and
exits non-zero if any target crashed, leaked past its limits or timed out, naming the input.

Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the targets are built first with
`cargo fuzz build -s none` (no sanitizer: AddressSanitizer needs a nightly compiler, and the
code has no `unsafe`, so what the fuzzer looks for is panics, aborts, hangs and memory use).
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
fuzz_dir = root / "fuzz"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--seconds", type=int, default=30, help="time per target (default 30)")
parser.add_argument("--work", type=Path, help="where new inputs and crashes go (default: a temporary directory)")
parser.add_argument("--targets", help="comma-separated targets (default: all, from `cargo fuzz list`)")
parser.add_argument("--merge", action="store_true", help="merge new coverage-adding inputs into fuzz/corpus afterwards")
parser.add_argument("--rss-limit-mb", type=int, default=1024)
parser.add_argument("--max-len", type=int, default=4096)
args = parser.parse_args()


def cargo_fuzz(*rest, **kw):
    return subprocess.run(["cargo", "fuzz", *rest], cwd=fuzz_dir, text=True, **kw)


if args.targets:
    targets = args.targets.split(",")
else:
    targets = cargo_fuzz("list", check=True, capture_output=True).stdout.split()
if not targets:
    sys.exit("no fuzz targets found")

if cargo_fuzz("build", "-s", "none").returncode != 0:
    sys.exit("cargo fuzz build failed")

work = args.work or Path(tempfile.mkdtemp(prefix="cypherwire-fuzz-"))
rows, failed = [], []
for target in targets:
    new = work / target
    artifacts = work / "artifacts" / target
    new.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus = fuzz_dir / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    run = cargo_fuzz(
        "run", "-s", "none", target, str(new), str(corpus), "--",
        f"-max_total_time={args.seconds}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-max_len={args.max_len}",
        "-timeout=10",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        capture_output=True,
    )
    out = run.stderr + run.stdout
    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", out, re.M))
    progress = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", out, re.M)
    cov, ft, corp = progress[-1] if progress else ("?", "?", "?")
    row = (
        target,
        stats.get("number_of_executed_units", "?"),
        stats.get("average_exec_per_sec", "?"),
        cov, ft, corp,
        stats.get("peak_rss_mb", "?"),
    )
    rows.append(row)
    print(f"{target}: {row[1]} runs, {row[2]} exec/s, cov {cov}, ft {ft}, corpus {corp}, "
          f"peak RSS {row[6]} MB, exit {run.returncode}", flush=True)
    if run.returncode != 0:
        failed.append(target)
        print("\n".join(out.splitlines()[-60:]), file=sys.stderr)
        for crash in sorted(artifacts.iterdir()):
            print(f"  input: {crash} ({crash.stat().st_size} bytes): "
                  f"reproduce with `cd fuzz && cargo fuzz run -s none {target} {crash}`", file=sys.stderr)
    elif args.merge:
        merge = cargo_fuzz("run", "-s", "none", target, str(corpus), str(new), "--", "-merge=1",
                           f"-max_len={args.max_len}", capture_output=True)
        if merge.returncode != 0:
            failed.append(f"{target} (merge)")

print()
print("| target | runs | exec/s | cov | ft | corpus | peak RSS MB |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"\nnew inputs and crashes: {work}")
if failed:
    sys.exit(f"fuzzing found failures in: {', '.join(failed)}")
