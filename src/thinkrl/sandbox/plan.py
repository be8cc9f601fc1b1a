"""Split test code into units the harness runs one at a time, so a run can score partially.

The parent does this from syntax alone (nothing is executed), which is why `total`
cannot be changed by the program under test. Two shapes are understood:

- HumanEval: `def check(candidate): assert ...` plus an optional `check(f)` call. Each
  top-level statement of check's body that holds an `assert` is a unit; the other
  statements (imports, assignments) run in order as setup.
- Plain asserts: each top-level statement holding an `assert` is a unit.

When a shape cannot be split safely (a `return` inside check, say), the whole test is
one unit. A test with no assert at all is one unit that passes when it runs cleanly.

The plan also names what the tests may call in the program (`exposed`): the entry point,
or, for plain asserts with none given, the names the tests use without defining them
(and that are neither builtins nor defined by the trusted `prelude`). Nothing else of the
program is visible to the tests: a program global named `abs` or `candidate` changes
nothing.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field


class PlanError(ValueError):
    """The tests cannot be run: they do not parse, or name no function to test."""


@dataclass(frozen=True)
class Step:
    source: str
    is_unit: bool


@dataclass(frozen=True)
class TestPlan:
    setup: str  # module-level test code run once (helpers, METADATA, def check)
    steps: list[Step] = field(default_factory=list)
    candidate_name: str | None = None  # the name the steps call the function under test by
    candidate_expr: str | None = None  # expression giving the function under test
    exposed: tuple[str, ...] = ()  # the program's functions the tests may call, by name

    @property
    def total(self) -> int:
        return sum(step.is_unit for step in self.steps)


def _holds_assert(node: ast.AST) -> bool:
    return any(isinstance(sub, ast.Assert) for sub in ast.walk(node))


def _is_check_call(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "check"
    )


def _compiles_alone(source: str) -> bool:
    """A statement lifted out of a function must still compile (no `return`, `yield`, `nonlocal`)."""
    try:
        compile(source, "<unit>", "exec")
    except SyntaxError:
        return False
    return True


def _steps(statements: list[ast.stmt]) -> list[Step] | None:
    steps = [Step(ast.unparse(node), _holds_assert(node)) for node in statements]
    if not all(_compiles_alone(step.source) for step in steps):
        return None
    return steps


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds somewhere: assignments, defs, imports, parameters, handlers."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
    return bound


def _free_names(tree: ast.AST, prelude: str) -> tuple[str, ...]:
    """Names the tests read but never bind, that no builtin or prelude definition supplies."""
    try:
        supplied = _bound_names(ast.parse(prelude)) if prelude else set()
    except SyntaxError:
        supplied = set()
    loaded = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    skip = _bound_names(tree) | supplied | set(dir(builtins))
    return tuple(sorted({name for name in loaded if name not in skip}))


def plan_tests(tests: str, entry_point: str | None = None, prelude: str = "") -> TestPlan:
    """Parse `tests` into setup code and ordered steps; raise PlanError when it cannot run.

    `prelude` is trusted code the tests may use (a HumanEval prompt's helpers)."""
    try:
        module = ast.parse(tests)
    except SyntaxError as exc:
        raise PlanError(f"the tests do not parse: {exc.msg} (line {exc.lineno})") from None
    body = module.body
    check = next((n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        steps = _steps(body)
        if steps is None or not any(s.is_unit for s in steps):
            steps = [Step(tests, True)]
        exposed = (entry_point,) if entry_point else _free_names(module, prelude)
        return TestPlan(setup="", steps=steps, candidate_name=entry_point, exposed=exposed)

    calls = [n for n in body if _is_check_call(n)]
    setup = ast.unparse(ast.Module(body=[n for n in body if not _is_check_call(n)], type_ignores=[]))
    call_args = calls[0].value.args if calls else []  # type: ignore[attr-defined]
    if call_args:
        candidate_expr = ast.unparse(call_args[0])
    elif entry_point:
        candidate_expr = entry_point
    else:
        raise PlanError("the tests define check() but never call it, and no entry_point names the function to test")
    named = call_args[0].id if call_args and isinstance(call_args[0], ast.Name) else None
    exposed = tuple(dict.fromkeys(n for n in (entry_point, named) if n))
    if not exposed:
        raise PlanError("the tests call check() on an expression, and no entry_point names the function to test")
    params = check.args.args
    if len(params) != 1 or check.decorator_list:
        return TestPlan(setup=setup, steps=[Step("check(candidate)", True)], candidate_name="candidate",
                        candidate_expr=candidate_expr, exposed=exposed)
    steps = _steps(check.body)
    if steps is None or not any(s.is_unit for s in steps):
        steps = [Step(f"check({params[0].arg})", True)]
    return TestPlan(setup=setup, steps=steps, candidate_name=params[0].arg, candidate_expr=candidate_expr, exposed=exposed)
