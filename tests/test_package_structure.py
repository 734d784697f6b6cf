"""The house rules of the package, checked by walking its source: every module short
enough to read in one sitting, lrnn imports at module top, and no import cycle."""

import ast
from pathlib import Path

LRNN = Path(__file__).resolve().parents[1] / "lrnn"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LRNN.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(LRNN.rglob("*.py"))}


def _lrnn_imports(path: Path, module: str, known):
    """(module-level targets, [(line, target) of imports inside functions or classes])."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    top_level = set()
    for node in tree.body:  # imports under a module-level if/try still run at import time
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top_level.update(id(n) for n in ast.walk(node))
    outer, inner = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")
                pkg = pkg[: len(pkg) - node.level + (1 if is_pkg else 0)]
                base = ".".join(pkg + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            names = subs or [base]  # `from lrnn import checkpoint` imports the submodule
        else:
            continue
        targets = {n for n in names if n in known and n != module}
        # importing a.b.c first runs the packages a and a.b: edges to them too, except to
        # the importer's own packages (already running when it imports its siblings)
        own = {".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 2)}
        targets |= {p for t in targets for k in range(1, t.count(".") + 1)
                    if (p := ".".join(t.split(".")[:k])) in known and p not in own}
        if not targets:
            continue
        if id(node) in top_level:
            outer |= targets
        else:
            inner.append((node.lineno, sorted(targets)[0]))
    return outer, inner


def _cycle(graph):
    """One import cycle as a list of modules, or None (iterative three-colour DFS)."""
    colour = dict.fromkeys(graph, 0)
    for start in graph:
        if colour[start]:
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_of_submodules_count_their_packages(tmp_path):
    """`from lrnn.train.metrics import x` in lrnn.plots runs lrnn/train/__init__.py, which
    may import lrnn.plots back: an edge plots -> lrnn.train; a module's own packages are not."""
    path = tmp_path / "m.py"
    path.write_text("from lrnn.train.metrics import read_metrics\nfrom lrnn.train import config\n")
    known = {"lrnn", "lrnn.plots", "lrnn.train", "lrnn.train.metrics", "lrnn.train.config", "lrnn.train.trainer"}
    assert _lrnn_imports(path, "lrnn.plots", known)[0] == {"lrnn.train", "lrnn.train.metrics", "lrnn.train.config"}
    assert _lrnn_imports(path, "lrnn.train.trainer", known)[0] == {"lrnn.train.metrics", "lrnn.train.config"}


def test_no_module_over_600_lines():
    long = {str(p.relative_to(LRNN.parent)): n for p in LRNN.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_lrnn_imports_at_module_top_and_no_cycle():
    mods = _modules()
    graph, inner = {}, []
    for name, path in mods.items():
        graph[name], nested = _lrnn_imports(path, name, mods)
        inner += [f"{path.relative_to(LRNN.parent)}:{line} imports {t}" for line, t in nested]
    assert not inner, "lrnn imports inside functions (move them to the module top):\n" + "\n".join(inner)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
