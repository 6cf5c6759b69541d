"""The layering the design promises: imports flow train/eval -> biomamba -> kernels, never back."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_train_or_eval():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                                   if m.split(".")[:2] in (["biomamba", "train"], ["biomamba", "eval"])
                                                   or m.split(".")[0] in ("train", "eval"))
                 for p in (ROOT / "biomamba").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_train_and_eval_import_no_top_level_train_or_eval_package():
    """In an installed wheel they exist only as biomamba.train / biomamba.eval."""
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] in ("train", "eval"))
                 for folder in ("train", "eval", "tests", "bench") for p in (ROOT / folder).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
