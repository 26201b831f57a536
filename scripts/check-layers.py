#!/usr/bin/env python3
"""Checks cypherwire's layer rule with `cargo metadata`.

wire <- session <- {server, client} <- mesh, and server <- cluster. Each library crate may depend (normal or build
dependencies) only on the workspace crates listed for it below; nothing but binaries, examples
and tests may depend on the facade; and the facade's `full` feature must enable every layer.
Exits non-zero, naming each violation, if the rule is broken.
"""
import json
import subprocess
import sys

ALLOWED = {
    "cypherwire-wire": set(),
    "cypherwire-session": {"cypherwire-wire"},
    "cypherwire-server": {"cypherwire-wire", "cypherwire-session"},
    "cypherwire-client": {"cypherwire-wire", "cypherwire-session"},
    "cypherwire-mesh": {"cypherwire-wire", "cypherwire-session", "cypherwire-server", "cypherwire-client"},
    "cypherwire-cluster": {"cypherwire-session", "cypherwire-server"},
    "cypherwire": {"cypherwire-wire", "cypherwire-session", "cypherwire-server", "cypherwire-client", "cypherwire-mesh", "cypherwire-cluster"},
    "cypherwire-freed-scan": set(),
    "cypherwire-test-support": {"cypherwire-wire", "cypherwire-session", "cypherwire-server", "cypherwire-client", "cypherwire-mesh", "cypherwire-cluster"},
}
# May depend on the facade (leaf binaries, examples, tests).
LEAVES = {"cypherwire-cli", "cypherwire-examples", "cypherwire-tests"}
LAYER_FEATURES = {"wire", "session", "server", "client", "mesh", "cluster", "msgpack", "json", "ring"}

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"]
    if "--offline" in sys.argv else ["cargo", "metadata", "--format-version", "1", "--no-deps"]))
members = {p["name"]: p for p in meta["packages"]}
problems = []

for name, pkg in sorted(members.items()):
    deps = {d["name"] for d in pkg["dependencies"]
            if d["name"].startswith("cypherwire") and d["kind"] in (None, "build")}
    dev_deps = {d["name"] for d in pkg["dependencies"]
                if d["name"].startswith("cypherwire") and d["kind"] == "dev"}
    if name in LEAVES:
        continue
    if name not in ALLOWED:
        problems.append(f"{name}: new workspace crate; add it to scripts/check-layers.py")
        continue
    for d in sorted(deps - ALLOWED[name]):
        problems.append(f"{name} depends on {d}, which the layer rule forbids")
    if "cypherwire" in dev_deps and name != "cypherwire":
        problems.append(f"{name} has a dev-dependency on the facade; use the layer crates")

facade = members.get("cypherwire")
if facade is None:
    problems.append("the facade crate `cypherwire` is missing")
else:
    feats = facade["features"]
    missing = LAYER_FEATURES - set(feats.get("full", []))
    if missing:
        problems.append(f"facade feature `full` does not enable: {', '.join(sorted(missing))}")
    for f in LAYER_FEATURES:
        if f not in feats:
            problems.append(f"facade has no feature `{f}`")

if problems:
    print("layer check FAILED:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
print(f"layer check ok: {len(members)} workspace crates follow wire <- session <- {{server, client}} <- mesh")
