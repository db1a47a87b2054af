"""The layout holds: layers kept (import-linter), no import cycles, small modules and functions, and
every artefact name spelled in one module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "finsent"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100


def test_layer_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install '.[dev]')")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_counting_imports_inside_functions():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("finsent")  # every import statement, at module level or in a function
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []


def _python_files():
    return sorted(PKG.rglob("*.py"))


def test_modules_and_functions_stay_small():
    big = []
    for path in _python_files():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert big == []


def _artefact_names() -> tuple[set[str], set[str]]:
    """(file names and suffixes, bare folder names) of core/artefacts.py, tuples included."""
    from finsent.core import artefacts

    values: set[str] = set()
    for k, v in vars(artefacts).items():
        if k.isupper():
            values.update(v if isinstance(v, tuple) else [v] if isinstance(v, str) else [])
    dotted = {v for v in values if "." in v}
    return dotted, values - dotted


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }


def _path_parts(tree: ast.AST) -> dict[int, str]:
    """The string constants used as a path component ("path": `folder / "x"`, `os.path.join(a, "x")`,
    `p.joinpath("x")`) or as a literal piece of an f-string ("fstring"), by id."""
    ids: dict[int, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            ids.update((id(v), "fstring") for v in n.values if isinstance(v, ast.Constant))
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            ids.update((id(x), "path") for x in (n.left, n.right) if isinstance(x, ast.Constant))
        if isinstance(n, ast.Call):
            name = getattr(n.func, "attr", getattr(n.func, "id", ""))
            if name in ("join", "joinpath", "with_name", "Path"):
                ids.update((id(a), "path") for a in n.args if isinstance(a, ast.Constant))
    return ids


def _spelled(node: ast.Constant, dotted: set[str], bare: set[str], in_path: str) -> str | None:
    """The artefact name a string constant (or a literal piece of an f-string) spells, if any."""
    text = node.value
    for name in dotted:  # a file name anywhere in a string: 'metrics.json', f'{out}.parity.json'
        if re.search(rf"(^|[^\w.]){re.escape(name)}($|[^\w])", text) or (
            name.startswith(".") and name in text
        ):
            return name
    # a folder name as a path component in code: Path(x) / "merged", os.path.join(x, "adapter"), or an
    # f-string piece after a value, f"{out}/runs/x" (a plain "runs/train" in help text is a user's folder)
    for name in bare:
        if (in_path == "path" and text == name) or (
            in_path == "fstring" and re.match(rf"/{re.escape(name)}(/|$)", text)
        ):
            return name
    return None


def test_artefact_names_are_spelled_only_in_artefacts():
    dotted, bare = _artefact_names()
    assert {"metrics.json", ".parity.json"} <= dotted and {"merged_model", "runs", "merged"} <= bare
    spelled = []
    for path in _python_files():
        if path.name == "artefacts.py":
            continue
        tree = ast.parse(path.read_text())
        skip, paths = _docstrings(tree), _path_parts(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                name = _spelled(node, dotted, bare, paths.get(id(node), ""))
                if name:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name!r} in {node.value!r}")
    assert spelled == []


def test_the_artefact_check_finds_f_strings_and_folder_names():
    dotted, bare = _artefact_names()
    tree = ast.parse(
        'a = f"{out}/metrics.json"\nb = folder / "merged"\nc = f"{d}/runs/x"\n'
        'd = os.path.join(x, "adapter")\ne = "the model is fine"\nf = cfg["model"]\nh = "runs/train"\ng = f"{o}.parity.json"'
    )
    paths = _path_parts(tree)
    hits = [
        _spelled(n, dotted, bare, paths.get(id(n), ""))
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert [h for h in hits if h] == ["metrics.json", "merged", "runs", "adapter", ".parity.json"]


# files of other projects that comments cite by name (llama.cpp's converter, as vendored)
EXTERNAL_FILES = {"convert_hf_to_gguf.py", "conversion/base.py", "conversion/llama.py"}
_PY_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[A-Za-z_][\w-]*\.py)\b")


def _missing_module_refs(path: Path, text: str) -> list[str]:
    """`x.py` and `a/b/x.py` mentions in `text` that name no file: a module of the package is named from
    its own folder or from src/finsent (`training/args.py`), anything else from the repository root."""
    missing = []
    for i, line in enumerate(text.splitlines(), 1):
        for ref in _PY_REF.findall(line):
            bases = (ROOT, PKG, ROOT / "src", path.parent)
            found = any((b / ref).is_file() for b in bases)
            if path.suffix == ".md" and "/" not in ref:  # a page's module tree lists bare names
                found = found or any(PKG.rglob(ref)) or (ROOT / "bench" / ref).is_file()
            if ref not in EXTERNAL_FILES and not found:
                missing.append(f"{path.relative_to(ROOT)}:{i}: {ref}")
    return missing


def test_no_reference_to_a_module_that_is_not_there():
    """The flat layout's modules (train_args.py, model_card.py, src/finsent/parallel.py ...) are gone:
    docstrings, comments, shipped configs, docs and benchmarks name today's files."""
    files = [*_python_files(), *(PKG / "configs").rglob("*.yaml"), *(ROOT / "bench").rglob("*.py")]
    files += [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    missing = [m for f in files for m in _missing_module_refs(f, f.read_text())]
    assert missing == []
    planted = _missing_module_refs(PKG / "training" / "x.py", "see train_args.py and parallel.py")
    assert planted == ["src/finsent/training/x.py:1: train_args.py"]
