#!/usr/bin/env python3
"""Runs the comparative performance suite and checks it against the performance targets.

Usage: scripts/bench-suite.py [--no-run]

Runs, one after the other, the four bench binaries of the `cypherwire-tests` package (each
interleaves its own comparisons and repeats them 5 times):

  bulk        1 GiB over one connection: plain TCP, tokio-rustls, bare snow, cypherwire
  reqresp     100-byte request/response: plain TCP, length prefix + AEAD, tarpc, cypherwire;
              memory per idle connection at 10,000 connections
  handshakes  handshakes + 1 round trip per second: bare snow, tokio-rustls, cypherwire
  compat      CYPHER_PROTOCOL's Python client and server against cypherwire

then merges their JSON outputs (target/bench-*.json) into target/bench-suite.json, with the
machine it ran on and one line per target (measured ratio, bar, met or not), and prints the
target table. `--no-run` only merges the JSON files already there.
"""
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
BENCHES = ["bulk", "reqresp", "handshakes", "compat"]


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
    }


def load(name):
    path = TARGET / f"bench-{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def find(rows, **want):
    for r in rows or []:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def targets(res):
    out = []

    def add(name, value, bar, higher_is_better=True):
        if value is None:
            out.append({"target": name, "measured": None, "bar": bar, "met": None})
            return
        met = value >= bar if higher_is_better else value <= bar
        out.append({"target": name, "measured": round(value, 3), "bar": bar, "met": met})

    bulk = res.get("bulk")
    for size in (65536, 16384):
        kib = size // 1024
        for suite in ("Aes256Gcm", "ChaCha20Poly1305"):
            r = find(bulk, message_bytes=size, transport=f"cypherwire {suite}")
            add(f"bulk {kib} KiB, ring {suite}: x tokio-rustls same AEAD",
                r and r.get("ratio_to_tls_same_aead"), 0.9)
            r = find(bulk, message_bytes=size, transport=f"cypherwire {suite} (RustCrypto)")
            add(f"bulk {kib} KiB, RustCrypto {suite}: x own ceiling 1/(1/TCP+1/seal)",
                r and r.get("ratio_to_ceiling"), 0.8)

    rr = res.get("reqresp")
    pinned = "sequential, 1 connection, pinned to one CPU"
    unpinned = "sequential, 1 connection, unpinned"
    inflight = "64 in flight, 1 connection"
    for key, label in (("cypherwire-session", "session client"), ("cypherwire-client", "Client")):
        r = find(rr, workload=pinned, transport=key)
        add(f"sequential pinned, {label}: x plain TCP rate", r and r["ratio_to_plain"], 0.9)
        r, p = find(rr, workload=unpinned, transport=key), find(rr, workload=unpinned, transport="plain")
        add(f"sequential unpinned, {label}: p50 latency / plain TCP's",
            r and p and r["p50_us"] / p["p50_us"], 1.3, higher_is_better=False)
        r = find(rr, workload=inflight, transport=key)
        add(f"64 in flight, {label}: x length prefix + AEAD echo", r and r["ratio_to_aead_echo"], 0.5)
        add(f"64 in flight, {label}: x tarpc", r and r["ratio_to_tarpc"], 2.0)
    # The request path's own cost: the `Client` against the session client it drives, and the
    # session client against the bare encrypted echo, in every request row.
    for workload, label in ((pinned, "sequential pinned"), (inflight, "64 in flight"),
                            ("100 connections, sequential each", "100 connections")):
        c, s = find(rr, workload=workload, transport="cypherwire-client"), \
            find(rr, workload=workload, transport="cypherwire-session")
        add(f"{label}, Client: x session client",
            c and s and c["rps_median"] / s["rps_median"], 0.9)
        add(f"{label}, session client: x length prefix + AEAD echo",
            s and s["ratio_to_aead_echo"], 0.9)
    r = find(rr, workload="idle connections")
    add("RSS per idle authenticated connection (KiB)", r and r["kib_per_connection"], 32,
        higher_is_better=False)

    hs = res.get("handshakes")
    r = find(hs, handshake="cypherwire PSK mode")
    add("PSK handshake + 1 RTT: x bare snow NNpsk0", r and r["ratio_to_snow"], 0.9)
    add("PSK handshake + 1 RTT: x tokio-rustls full handshake", r and r["ratio_to_tls"], 1.0)

    cp = res.get("compat")
    for pair, label in (("cypherwire client -> cypherwire server",
                         "multi-thread runtime, caller in a task"),
                        ("cypherwire client -> cypherwire server, caller on the block_on thread",
                         "multi-thread runtime, caller on the block_on thread"),
                        ("cypherwire, one current-thread runtime", "one current-thread runtime")):
        r = find(cp, pair=pair)
        add(f"sequential req/s x CYPHER_PROTOCOL (Python), {label}", r and r["ratio_to_python"], 10.0)
    for pair, label in (("cypherwire client -> cypherwire, 1 MiB",
                         "multi-thread runtime, caller in a task"),
                        ("cypherwire client -> cypherwire, 1 MiB, caller on the block_on thread",
                         "multi-thread runtime, caller on the block_on thread"),
                        ("cypherwire, one current-thread runtime, 1 MiB", "one current-thread runtime")):
        r = find(cp, pair=pair)
        add(f"1 MiB MiB/s x CYPHER_PROTOCOL (Python), {label}", r and r["ratio_to_python"], 20.0)
    return out


def main():
    run = "--no-run" not in sys.argv[1:]
    started = time.time()
    if run:
        for name in BENCHES:
            print(f"\n=== cargo bench -p cypherwire-tests --bench {name}", flush=True)
            subprocess.run(["cargo", "bench", "-p", "cypherwire-tests", "--bench", name],
                           cwd=ROOT, check=True)
    res = {name: load(name) for name in BENCHES}
    checks = targets(res)
    suite = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "seconds": round(time.time() - started),
        "results": res,
        "targets": checks,
    }
    out = TARGET / "bench-suite.json"
    out.write_text(json.dumps(suite, indent=1) + "\n")
    print("\n| target | measured | bar | met |")
    print("| --- | --- | --- | --- |")
    for c in checks:
        met = "—" if c["met"] is None else ("yes" if c["met"] else "**no**")
        measured = "not measured" if c["measured"] is None else c["measured"]
        print(f"| {c['target']} | {measured} | {c['bar']} | {met} |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
