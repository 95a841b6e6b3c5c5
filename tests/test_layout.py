"""The house's layout, read from the source: no import cycle, dependencies one way, few modules loose at the top of
gateway/, every package saying what it owns and may import, and the typed seams that mypy checks.

The import graph is built from the AST of every module of gateway/, actors/ and storage/: imports at module level
and inside functions alike. Imports under `if TYPE_CHECKING:` never run, so the cycle check leaves them out (that
is how `gateway.core.Services` names the types of the features that themselves take a `Runtime`); the one-way
check counts them too, since even a type must not point upward.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "actors", "storage")
LAYER = {"gateway": 0, "actors": 1, "storage": 2}  # an import may only go to the same layer or a higher number
MAX_TOP_MODULES = 12


def modules(root: Path) -> dict[str, Path]:
    """Every module of the three packages by dotted name (a package by its own name, for its __init__.py)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str], *, type_checking: bool) -> set[str]:
    """The modules of `known` that `name` imports anywhere in its file; `type_checking`: with TYPE_CHECKING ones."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for stmt in child.orelse:
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in known else module)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    out: set[str] = set()
    for module in found:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module and module != name:
            out.add(module)
    return out


def import_graph(root: Path, *, type_checking: bool) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known, type_checking=type_checking) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if LAYER[target.split(".")[0]] < LAYER[name.split(".")[0]]
    )


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    found = cycles(import_graph(ROOT, type_checking=False))
    assert found == [], "import cycles (each line: the modules of one cycle):\n" + "\n".join(map(str, found))


def test_dependencies_point_one_way_gateway_actors_storage() -> None:
    assert upward_imports(import_graph(ROOT, type_checking=True)) == []


def test_storage_never_imports_trio() -> None:
    bad = [
        name
        for name, path in modules(ROOT).items()
        if name.startswith("storage") and "trio" in imports_of(name, path, {"trio"}, type_checking=True)
    ]
    assert bad == []


def test_records_are_msgspec_structs_not_dataclasses() -> None:
    # A frozen slotted dataclass costs ~1.3 ms to define (its methods are compiled by exec at import) and ~1.8 µs to
    # build; a frozen Struct ~0.03 ms and ~0.2 µs. With ~100 records, that was a fifth of a gateway's start.
    bad = [
        name
        for name, path in modules(ROOT).items()
        if "dataclasses" in imports_of(name, path, {"dataclasses"}, type_checking=True)
    ]
    assert bad == []


def test_few_modules_sit_loose_at_the_top_of_gateway() -> None:
    top = sorted(p.name for p in (ROOT / "gateway").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules at the top of gateway/ (at most {MAX_TOP_MODULES}): {top}"


def test_every_package_says_what_it_owns_and_what_it_may_import() -> None:
    missing: list[str] = []
    for package in PACKAGES:
        for init in sorted((ROOT / package).rglob("__init__.py")):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            rel = str(init.relative_to(ROOT))
            if not doc:
                missing.append(f"{rel}: no docstring")
            elif init.parent.parent == ROOT / "gateway" and "May import" not in doc:
                missing.append(f"{rel}: its docstring does not say what it may import (`May import: …`)")
    assert missing == []


SEAMS = """
from actors.store import Store
from gateway.core import Runtime
from storage import users as users_db


async def wrong(store: Store, runtime: Runtime) -> None:
    await store.call(users_db.get_user, 5)
    await store.read(users_db.get_user, "u1", "extra")
    runtime.services["rest"]
    runtime.services.rest.issuer
"""


def test_the_seams_are_typed_so_mypy_finds_a_wrong_storage_call_or_service(tmp_path: Path) -> None:
    """`Store.call`/`Store.read` take the storage function's own arguments; `runtime.services` is a typed object
    whose services may not have started."""
    snippet = tmp_path / "seams.py"
    snippet.write_text(SEAMS)
    # The project's cache (warm after `scripts/test` has run mypy) spares re-reading every module the snippet uses.
    argv = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(ROOT / ".mypy_cache"), str(snippet)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    errors = sorted(int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line)
    assert errors == [8, 9, 10, 11], out


def test_one_clock_for_stored_milliseconds() -> None:
    """`storage.clock.now_ms` is the one wall clock in milliseconds: no module defines its own (a method with its
    own injectable clock, like the scheduler's, is not one) nor spells `time.time_ns() // 1_000_000` again."""
    found: list[str] = []
    for name, path in modules(ROOT).items():
        if name == "storage.clock":
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") == "now_ms":
                found.append(f"{name}: def {node.name}")
        for expr in ast.walk(tree):
            if (
                isinstance(expr, ast.BinOp)
                and isinstance(expr.op, ast.FloorDiv)
                and isinstance(expr.left, ast.Call)
                and ast.unparse(expr.left.func) == "time.time_ns"
            ):
                found.append(f"{name}:{expr.lineno}: {ast.unparse(expr)}")
    assert found == []


def test_every_http_error_class_is_in_gateway_errors_and_its_docstring() -> None:
    """One exception tree: a class a client is shown (a GatewayError) is defined in gateway/errors.py only, and that
    module's docstring lists it with its status."""
    errors = ast.parse((ROOT / "gateway" / "errors.py").read_text())
    tree = {node.name for node in errors.body if isinstance(node, ast.ClassDef)}
    doc = ast.get_docstring(errors) or ""
    assert sorted(name for name in tree if name not in doc) == []
    elsewhere = [
        f"{name}: class {node.name}"
        for name, path in modules(ROOT).items()
        if name.startswith("gateway.") and name != "gateway.errors"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and {ast.unparse(base).rpartition(".")[2] for base in node.bases} & tree
    ]
    assert elsewhere == []
