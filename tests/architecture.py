"""A static checker of the package's import structure (used by tests/test_architecture.py).

Pure functions over a package directory: every ``.py`` file under it is parsed with ``ast``;
nothing is imported or executed, so a broken or heavy module cannot hide a problem, and the
checks run in well under a second. Each ``find_*`` function returns a sorted list of
human-readable problems (empty when the package is clean), most as ``path:line: message``
with the path relative to the folder holding the package (``psy_agents/hpo/storage.py``).

What counts as an import of the package's own modules: ``import a.b`` (an edge to ``a.b``),
``from a.b import c`` (to ``a.b.c`` when that is a module, else to ``a.b``), relative imports
resolved against the importing module, at module level (including ``if``/``try`` and
``if TYPE_CHECKING:`` blocks) and inside functions. The parent packages that Python runs on
the way (``a/__init__.py`` for ``import a.b``) are not counted as imported, and imports made
by string (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "psy_agents"

# Layers, top to bottom: a module may import from its own layer or any layer below, never
# above. Keyed by module prefix; the longest matching prefix wins. A module matching none is
# itself a problem, so a new top-level module is placed consciously.
LAYERS: dict[str, int] = {
    "psy_agents.cli": 7,
    "psy_agents.bench": 6,
    "psy_agents.hpo": 5,
    "psy_agents.reporting": 5,
    "psy_agents.training": 4,
    "psy_agents.tracking": 4,
    "psy_agents.agents": 3,
    "psy_agents.backends": 3,
    "psy_agents.data": 2,
    "psy_agents": 1,  # the package __init__ itself (submodules need their own entry)
    "psy_agents.config": 1,
    "psy_agents.errors": 1,
    "psy_agents.lazy": 1,
    "psy_agents.paths": 1,
    "psy_agents.settings": 1,
}

# Modules that may read PSY_* environment variables although they are not under cli/.
ENV_READERS = {"psy_agents.worker_env"}
ENV_PREFIX = "PSY_"

# The CLI edge: may read the environment and import its subcommands lazily.
CLI_PREFIX = "psy_agents.cli"

MAX_LINES = 400

# Own modules that import a heavy library at module level because they define its classes
# (torch ``nn.Module`` subclasses): they are deferred exactly like torch itself, so a
# function-local import of one is allowed. Keep this list short and say why for each.
DEFERRED_MODULES = {
    "psy_agents.agents.models": "defines the torch nn.Module classes of the agents",
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "psy_agents.hpo.storage"; a package's __init__ is "psy_agents.hpo"
    path: str  # relative to the folder holding the package, for messages
    is_package: bool
    tree: ast.Module
    n_lines: int


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # one of the package's modules
    line: int
    function: str | None  # the enclosing function ("Cls.method"); None at module level


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int  # 0 when the problem is the whole module
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


def report(problems: list[Problem]) -> list[str]:
    """The problems as text, in file and line order, each once."""
    return [str(problem) for problem in sorted(set(problems))]


def under(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or one of its submodules (``a.bc`` is not under ``a.b``)."""
    return name == prefix or name.startswith(prefix + ".")


# --- loading ------------------------------------------------------------------------------


def load_modules(root: Path = PACKAGE_ROOT) -> dict[str, Module]:
    """Every module of the package at ``root`` (a folder with ``__init__.py``), by name."""
    root = Path(root)
    modules = {}
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root.parent)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        source = file.read_text(encoding="utf-8")
        modules[".".join(parts)] = Module(
            name=".".join(parts), path=rel.as_posix(), is_package=is_package,
            tree=ast.parse(source, filename=str(file)), n_lines=len(source.splitlines()))
    return modules


# --- imports ------------------------------------------------------------------------------


class _ImportCollector(ast.NodeVisitor):
    """Import statements of one module, each with its enclosing function (or None)."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, str | None]] = []
        self._scopes: list[tuple[str, bool]] = []  # (name, is a function), outermost first

    def _visit_scope(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scopes.append((node.name, not isinstance(node, ast.ClassDef)))
        self.generic_visit(node)
        self._scopes.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _visit_scope

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        in_function = any(is_function for _, is_function in self._scopes)
        qualname = ".".join(name for name, _ in self._scopes)
        self.found.append((node, qualname if in_function else None))

    visit_ImportFrom = visit_Import


def _resolve_base(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module named by ``from <base> import ...``; None if it climbs too high."""
    if node.level == 0:
        return node.module
    parts = module.name.split(".")
    if not module.is_package:
        parts.pop()  # relative to the package holding the module
    if node.level - 1 >= len(parts):
        return None
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``name`` that is one of the package's modules, if any."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _targets(module: Module, node: ast.Import | ast.ImportFrom,
             modules: dict[str, Module]) -> list[str]:
    """The package's own modules that one import statement imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve_base(module, node)
        if base is None:
            return []
        # `from a.b import c`: c is the submodule a.b.c if there is one, else a name in a.b.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    found = [_known(name, modules) for name in names]
    return sorted({name for name in found if name is not None})


def collect_imports(modules: dict[str, Module]) -> list[Import]:
    """Every import of one of the package's own modules, module-level and function-local."""
    imports = []
    for module in modules.values():
        collector = _ImportCollector()
        collector.visit(module.tree)
        for node, function in collector.found:
            for target in _targets(module, node, modules):
                imports.append(Import(module.name, target, node.lineno, function))
    return sorted(imports, key=lambda i: (i.importer, i.line, i.target))


# --- 1. cycles ----------------------------------------------------------------------------


def _graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """importer -> target -> the first import making that edge (self-imports dropped)."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.importer != imp.target:
            graph.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    return graph


def _reachable(start: str, graph: dict[str, dict[str, Import]]) -> set[str]:
    """Every module reachable from ``start`` by one or more imports."""
    seen: set[str] = set()
    queue = deque(graph.get(start, {}))
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(graph.get(node, {}))
    return seen


def _components(graph: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Strongly connected components with more than one module.

    Two modules share a component when each reaches the other; quadratic, which is nothing
    for a package of a hundred modules and easier to trust than Tarjan's algorithm.
    """
    reach = {node: _reachable(node, graph) for node in graph}
    components, seen = [], set()
    for node in sorted(graph):
        if node in seen or node not in reach[node]:
            continue
        component = {other for other in reach[node] if node in reach.get(other, ())}
        components.append(component)
        seen |= component
    return components


def _shortest_cycle(start: str, component: set[str],
                    graph: dict[str, dict[str, Import]]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, {})):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child in component and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def _rotated(cycle: list[str]) -> list[str]:
    """The same cycle started at its first module by name (``b -> a -> b``: ``a -> b -> a``)."""
    ring = cycle[:-1]
    start = ring.index(min(ring))
    ring = ring[start:] + ring[:start]
    return [*ring, ring[0]]


def _describe_cycle(path: list[str], graph: dict[str, dict[str, Import]],
                    modules: dict[str, Module]) -> str:
    """``a -> b -> a (a.py:3, b.py:9 in f)``: the chain, then where each import is."""
    where = []
    for importer, target in zip(path, path[1:], strict=False):
        imp = graph[importer][target]
        local = f" in {imp.function}()" if imp.function else ""
        where.append(f"{modules[importer].path}:{imp.line}{local}")
    return f"{' -> '.join(path)} ({', '.join(where)})"


def find_cycles(root: Path = PACKAGE_ROOT) -> list[str]:
    """Import cycles between modules, function-local imports included.

    Each component is covered by shortest cycles through its modules in name order, so a
    tangle of three modules shows every module at least once.
    """
    modules = load_modules(root)
    graph = _graph(collect_imports(modules))
    problems = []
    for component in _components(graph):
        covered: set[str] = set()
        for start in sorted(component):
            if start not in covered:
                path = _rotated(_shortest_cycle(start, component, graph))
                covered.update(path)
                problems.append(_describe_cycle(path, graph, modules))
    return sorted(problems)


# --- 2. layers ----------------------------------------------------------------------------


def layer_of(name: str) -> tuple[str, int] | None:
    """(layer label, level) of a module by its longest matching LAYERS prefix, or None.

    A key without a dot, the package itself, matches only the package ``__init__``; the
    other keys match their module and its submodules.
    """
    matches = [prefix for prefix in LAYERS
               if name == prefix or ("." in prefix and under(name, prefix))]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return prefix.rpartition(".")[2], LAYERS[prefix]


def find_layer_violations(root: Path = PACKAGE_ROOT) -> list[str]:
    """Imports of a higher layer, and modules that belong to no layer."""
    modules = load_modules(root)
    problems = [Problem(module.path, 0, f"module {name} has no layer; add it to LAYERS")
                for name, module in modules.items() if layer_of(name) is None]
    for imp in collect_imports(modules):
        source, target = layer_of(imp.importer), layer_of(imp.target)
        if source is None or target is None or target[1] <= source[1]:
            continue  # an unlayered module is reported once above, not at each import
        problems.append(Problem(
            modules[imp.importer].path, imp.line,
            f"{imp.importer} imports {imp.target} "
            f"(layer {source[0]} imports the higher layer {target[0]})"))
    return report(problems)


# --- 3. environment reads -----------------------------------------------------------------
#
# A read is os.environ[KEY], os.environ.get/setdefault/pop(KEY), os.getenv(KEY) and
# KEY in os.environ, also through `from os import environ, getenv` and through a local name
# bound to os.environ (``env = os.environ if env is None else env``). KEY is a string
# literal, a module-level constant of the same module, or an f-string; it is flagged when
# it starts with PSY_.

_ENVIRON_METHODS = {"get", "setdefault", "pop"}


def _env_names(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """Names this module binds to the os module, to os.environ and to os.getenv."""
    os_names, environ_names, getenv_names = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or "os" for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
            for alias in node.names:
                if alias.name == "environ":
                    environ_names.add(alias.asname or alias.name)
                elif alias.name == "getenv":
                    getenv_names.add(alias.asname or alias.name)
    return os_names, environ_names, getenv_names


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "..."`` (or ``NAME: str = "..."``) assignments."""
    constants = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return constants


def _fstring_text(node: ast.JoinedStr) -> str:
    """An f-string as written, e.g. ``PSY_{backend.upper()}``."""
    return "".join(part.value if isinstance(part, ast.Constant)
                   else "{" + ast.unparse(part.value) + "}" for part in node.values)


class _EnvReadFinder(ast.NodeVisitor):
    """(line, variable) of every PSY_* environment read in one module."""

    def __init__(self, tree: ast.Module) -> None:
        self.os_names, self.environ_names, self.getenv_names = _env_names(tree)
        self.constants = _string_constants(tree)
        self.aliases: list[set[str]] = [set()]  # names bound to os.environ, per function
        self.found: list[tuple[int, str]] = []

    def _is_environ(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            return (node.attr == "environ" and isinstance(node.value, ast.Name)
                    and node.value.id in self.os_names)
        if isinstance(node, ast.Name):
            return node.id in self.environ_names or any(node.id in s for s in self.aliases)
        return False

    def _may_be_environ(self, node: ast.expr) -> bool:
        """``os.environ``, ``x if c else os.environ``, ``x or os.environ``."""
        if isinstance(node, ast.IfExp):
            return self._may_be_environ(node.body) or self._may_be_environ(node.orelse)
        if isinstance(node, ast.BoolOp):
            return any(self._may_be_environ(value) for value in node.values)
        return self._is_environ(node)

    def _key(self, node: ast.expr) -> str | None:
        """The variable a key expression names, when it is a PSY_* one."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            key = node.value
        elif isinstance(node, ast.Name) and node.id in self.constants:
            key = self.constants[node.id]
        elif isinstance(node, ast.JoinedStr):
            key = _fstring_text(node)
        else:
            return None
        return key if key.startswith(ENV_PREFIX) else None

    def _flag(self, line: int, key_node: ast.expr) -> None:
        key = self._key(key_node)
        if key is not None:
            self.found.append((line, key))

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.aliases.append(set())
        self.generic_visit(node)
        self.aliases.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._may_be_environ(node.value):
            self.aliases[-1] |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._is_environ(node.value):
            self._flag(node.lineno, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn) and self._is_environ(right):
                self._flag(node.lineno, left)
            left = right
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        is_getenv = (isinstance(func, ast.Name) and func.id in self.getenv_names) or (
            isinstance(func, ast.Attribute) and func.attr == "getenv"
            and isinstance(func.value, ast.Name) and func.value.id in self.os_names)
        is_method = (isinstance(func, ast.Attribute) and func.attr in _ENVIRON_METHODS
                     and self._is_environ(func.value))
        if (is_getenv or is_method) and node.args:
            self._flag(node.lineno, node.args[0])
        self.generic_visit(node)


def find_env_reads(root: Path = PACKAGE_ROOT) -> list[str]:
    """PSY_* environment reads outside cli/ and the ENV_READERS allow-list."""
    problems = []
    for name, module in load_modules(root).items():
        if under(name, CLI_PREFIX) or name in ENV_READERS:
            continue
        finder = _EnvReadFinder(module.tree)
        finder.visit(module.tree)
        problems += [Problem(module.path, line, f"reads the environment variable {key}")
                     for line, key in finder.found]
    return report(problems)


# --- 4. function-local imports ------------------------------------------------------------


def find_local_imports(root: Path = PACKAGE_ROOT) -> list[str]:
    """Imports of the package's own modules inside a function, outside cli/."""
    modules = load_modules(root)
    return report([
        Problem(modules[imp.importer].path, imp.line,
                f"function-local import of {imp.target} in {imp.function}(); "
                "import it at the top of the module")
        for imp in collect_imports(modules)
        if imp.function is not None and not under(imp.importer, CLI_PREFIX)
        and imp.target not in DEFERRED_MODULES])


# --- 5. module size -----------------------------------------------------------------------


def find_large_modules(root: Path = PACKAGE_ROOT, max_lines: int = MAX_LINES) -> list[str]:
    """Modules longer than ``max_lines`` lines."""
    return report([
        Problem(module.path, 0, f"{module.n_lines} lines, over the limit of {max_lines}; "
                                "split it")
        for module in load_modules(root).values() if module.n_lines > max_lines])
