#!/usr/bin/env python3
"""Import circles between a crate's top-level modules.

For each crate's `src/`, every `crate::a::...` path in a module `b` (its file `b.rs` and
everything under `b/`) is an edge b -> a. A strongly connected set of two or more
top-level modules is an import circle: the modules cannot be read or changed one at a
time. Children reaching their parent (`super::`) are not edges: that is nesting.

    scripts/import-cycles.py CRATE_SRC_DIR...

Prints each crate's circles (or "none") and exits 1 if any crate has one.
"""
import re
import sys
from pathlib import Path

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}`: the names right inside the braces are top-level modules too.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def top_module(src, path):
    rel = path.relative_to(src)
    if rel.parts[0] in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def edges(src):
    graph = {}
    for path in sorted(src.rglob("*.rs")):
        module = top_module(src, path)
        if module is None or path.name == "tests.rs" or "tests" in path.parts[len(src.parts):-1]:
            continue
        text = strip_comments(path.read_text())
        used = set(PATH.findall(text))
        for group in GROUP.findall(text):
            used |= {n.strip().split("::")[0] for n in group.split(",") if n.strip()}
        graph.setdefault(module, set()).update(u for u in used if u != module and u != "self")
    return graph


def cycles(graph):
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(dirs):
    found = False
    for d in dirs:
        src = Path(d)
        circles = cycles(edges(src))
        found |= bool(circles)
        shown = "; ".join(" <-> ".join(c) for c in circles) or "none"
        print(f"{src}: {shown}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
