#!/usr/bin/env python3
"""Checks the house rules inside the crates, from their sources.

1. No import circles between the files of a crate: a file names items of another file of its
   crate through `crate::`, `super::` or `self::` paths (in `use` trees and inline), a path to a
   re-export counts as a path to the file that defines the item, and a file holding its own
   submodules (`lib.rs`, `mod.rs`: declaring, re-exporting or using them) is containment, not
   an import. Test-only code (files named `tests.rs`, inline
   `#[cfg(test)] mod tests { ... }`) is left out, as it may reach anywhere.
2. One public path per type: only the facade crate (`crates/cypherwire`) re-exports another
   workspace crate (`pub use cypherwire_...`); every other crate's users import a type from
   the crate that defines it. A crate's root re-exports the main types of its public modules
   (the modules keep their detail types); code in the workspace names a type the root
   re-exports by its root path (`cypherwire_session::ClientAuth`, not
   `cypherwire_session::handshake::ClientAuth`).

Exits non-zero, naming each circle (its files) and each second path, if a rule is broken.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FACADE = "cypherwire"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src, path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def strip_code(text):
    """Drops comments, string literals and inline test modules."""
    text = re.sub(r"#\[cfg\(test\)\]\s*(#\[[^\]]*\]\s*)*mod\s+\w+\s*\{.*", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def split_top(s):
    """Splits a use-tree list on commas outside braces."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def expand(tree, prefix=()):
    """Yields (path, alias) for every leaf of a use tree."""
    tree = tree.strip()
    if not tree:
        return
    m = re.match(r"^(.*?)::\{(.*)\}$", tree, flags=re.S)
    if m:
        head = tuple(p for p in m.group(1).split("::") if p)
        for sub in split_top(m.group(2)):
            yield from expand(sub, prefix + head)
        return
    if tree.startswith("{") and tree.endswith("}"):
        for sub in split_top(tree[1:-1]):
            yield from expand(sub, prefix)
        return
    alias = None
    am = re.match(rf"^(.*)\s+as\s+({IDENT})$", tree, flags=re.S)
    if am:
        tree, alias = am.group(1).strip(), am.group(2)
    path = prefix + tuple(p.strip() for p in tree.split("::") if p.strip())
    yield path, alias or (path[-1] if path else None)


def absolute(module, path):
    """Resolves crate/super/self paths against `module`; None for other crates' paths."""
    if not path:
        return None
    out = list(module)
    head, rest = path[0], list(path[1:])
    if head == "crate":
        out = []
    elif head == "self":
        pass
    elif head == "super":
        out = out[:-1]
        while rest and rest[0] == "super":
            out = out[:-1]
            rest = rest[1:]
    else:
        return None
    return tuple(out + rest)


def check_crate(name, src):
    files = {}
    for path in sorted(src.rglob("*.rs")):
        if path.name == "tests.rs":
            continue
        files[module_of(src, path)] = path
    uses, reexports = {}, {}
    for module, path in files.items():
        code = strip_code(path.read_text())
        targets = set()
        exports = {}
        for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", code):
            public = m.group(1) is not None
            for leaf, alias in expand(m.group(2)):
                full = absolute(module, leaf)
                if full is None:
                    continue
                targets.add(full)
                if public and alias and alias != "*" and alias != "self":
                    exports[alias] = full
        for m in re.finditer(rf"\b((?:crate|super|self)(?:::{IDENT})+)", code):
            full = absolute(module, tuple(m.group(1).split("::")))
            if full is not None:
                targets.add(full)
        uses[module] = targets
        reexports[module] = exports

    def resolve(path, depth=0):
        """The module (file) that defines what `path` names."""
        for cut in range(len(path), -1, -1):
            mod = tuple(path[:cut])
            if mod in files:
                rest = path[cut:]
                if rest and depth < 8 and rest[0] in reexports.get(mod, {}):
                    target = reexports[mod][rest[0]]
                    if target != mod + (rest[0],):
                        return resolve(target + tuple(rest[1:]), depth + 1)
                return mod
        return None

    graph = {m: set() for m in files}
    for module, targets in uses.items():
        for t in targets:
            if t and t[-1] == "*":
                t = t[:-1]
            dest = resolve(t)
            # A file holding its own submodules (re-exporting or using them) is containment,
            # not an import: a circle needs an arrow between files neither of which holds the
            # other, or one back up from a child.
            if dest is not None and dest != module and dest[: len(module)] != module:
                graph[module].add(dest)
    return [[str(files[m].relative_to(ROOT)) for m in scc] for scc in sccs(graph)]


def sccs(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


problems = []
crates = sorted(p for p in (ROOT / "crates").iterdir() if (p / "Cargo.toml").exists())
for crate in crates:
    src = crate / "src"
    if not src.exists():
        continue
    for circle in check_crate(crate.name, src):
        problems.append(f"{crate.name}: import circle: {' <-> '.join(circle)}")
    if crate.name == FACADE:
        continue
    for path in sorted(src.rglob("*.rs")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*pub(\([^)]*\))?\s+use\s+(?:::)?cypherwire_", line):
                rel = path.relative_to(ROOT)
                problems.append(
                    f"{rel}:{n}: re-exports another workspace crate (a second public path; "
                    "only the facade re-exports layers)"
                )

# Root re-exports of each crate: (crate, module) -> names the root re-exports from it.
root_names = {}
for crate in crates:
    lib = crate / "src" / "lib.rs"
    if not lib.exists():
        continue
    code = strip_code(lib.read_text())
    for m in re.finditer(r"\bpub\s+use\s+([^;]+);", code):
        for leaf, alias in expand(m.group(1)):
            if len(leaf) == 3 and leaf[0] == "crate" and alias == leaf[-1]:
                root_names.setdefault((crate.name.replace("-", "_"), leaf[1]), set()).add(alias)
# Every use of a module path for a type the root re-exports, anywhere in the workspace.
for path in sorted(p for d in ("crates", "tests", "examples", "fuzz") for p in (ROOT / d).rglob("*.rs")):
    if "target" in path.parts:
        continue
    code = strip_code(path.read_text())
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        for leaf, _ in expand(m.group(1)):
            if len(leaf) == 3 and leaf[2] in root_names.get((leaf[0], leaf[1]), ()):
                rel = path.relative_to(ROOT)
                problems.append(
                    f"{rel}: {'::'.join(leaf)} is re-exported as {leaf[0]}::{leaf[2]}; use that path"
                )

if problems:
    print("import check FAILED:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
print(f"import check ok: {len(crates)} crates, no import circles, one public path per type")
