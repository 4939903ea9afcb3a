"""The floor plan of docs/architecture.md is the layering the imports have: the test reads the plan
from the docs and every import statement of the package (module level or inside functions)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("nplm_kernel", "nn_baseline")
#: A room holds at most this fraction of the package's lines.
MAX_ROOM_SHARE = 0.16


def floor_plan() -> dict[str, int]:
    """{room: floor} from the ```floors block of docs/architecture.md (a room is a folder, 'name/',
    or a module file, 'name.py', relative to the repository)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```floors\n(.*?)```", text, re.S).group(1)
    plan = {}
    for line in block.splitlines():
        match = re.match(r"\s*(\d+)\s+(\S.*?)\s{2,}", line)
        if match:
            for room in match.group(2).split(", "):
                plan[room.strip()] = int(match.group(1))
    return plan


def source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def room_of(path: Path, plan: dict[str, int]) -> str:
    relative = path.relative_to(ROOT).as_posix()
    rooms = [room for room in plan if relative == room or (room.endswith("/") and relative.startswith(room))]
    assert rooms, f"{relative} is in no room of the floor plan in docs/architecture.md"
    return max(rooms, key=len)


def module_path(module: str) -> Path | None:
    """The file of a module of the package (its package's __init__.py for a package)."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the package's own modules in `path`."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                names = [f"{base}.{node.module}" if node.module else base]
                if not node.module:
                    names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def test_every_import_goes_down_the_floor_plan():
    plan = floor_plan()
    upward = []
    for path in source_files():
        room = room_of(path, plan)
        for line, module in imported_modules(path):
            target = module_path(module)
            if target is None:  # a name imported from a package: `from . import options`
                continue
            other = room_of(target, plan)
            if other != room and plan[other] >= plan[room]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({room}, floor {plan[room]}) imports {module} "
                              f"({other}, floor {plan[other]})")
    assert not upward, "imports that do not go down the floor plan:\n" + "\n".join(upward)


def test_the_floor_plan_covers_every_room_and_no_room_is_too_big():
    plan = floor_plan()
    lines: dict[str, int] = {}
    for path in source_files():
        lines[room_of(path, plan)] = lines.get(room_of(path, plan), 0) + len(path.read_text().splitlines())
    assert set(lines) == set(plan), f"rooms of the plan without code: {sorted(set(plan) - set(lines))}"
    total = sum(lines.values())
    too_big = {room: f"{count / total:.0%}" for room, count in lines.items() if count > MAX_ROOM_SHARE * total}
    assert not too_big, f"rooms above {MAX_ROOM_SHARE:.0%} of the package's {total} lines: {too_big}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The import reader resolves relative imports (a solver module importing the kernel backend
    would be caught)."""
    path = ROOT / "nplm_kernel" / "solver" / "point_loss.py"
    modules = [module for _, module in imported_modules(path)]
    assert "nplm_kernel.solver.cg" in modules and "nplm_kernel.solver.newton" in modules
    plan = floor_plan()
    assert plan[room_of(module_path("nplm_kernel.kernel.estimator"), plan)] > plan[room_of(path, plan)]
