"""The layers of proxy/ are written as import-linter contracts (pyproject.toml) that
`make test` runs; these make sure the contracts cover every module and really bite."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_every_module_of_proxy_has_a_layer() -> None:
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    assert isinstance(layers, list)
    named = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    package = ROOT / "proxy"
    modules = {
        f"proxy.{path.stem if path.is_file() else path.name}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert modules - named == set()


def test_a_lower_layer_importing_a_higher_one_breaks_the_contracts(tmp_path: pathlib.Path) -> None:
    # A copy of the package in which the values import the session, as TYPE_CHECKING only.
    copy = tmp_path / "proxy"
    subprocess.run(["cp", "-r", str(ROOT / "proxy"), str(copy)], check=True)
    values = copy / "values.py"
    values.write_text(
        values.read_text()
        + "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        + "    from proxy.session import StreamSession  # noqa: F401\n"
    )
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    lint_imports = pathlib.Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "Layers: imports only point down BROKEN" in result.stdout
    assert "proxy.values -> proxy.session" in result.stdout


# The house's size rule (STYLE.md): a class under 150 lines, a function under 60.
MAX_CLASS_LINES = 149
MAX_FUNCTION_LINES = 59


def oversized(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                found.append(f"{where}: {node.name} is {lines} lines (at most {limit})")
    return found


def test_every_class_and_function_of_proxy_keeps_to_its_size() -> None:
    found = [
        problem
        for path in sorted((ROOT / "proxy").rglob("*.py"))
        for problem in oversized(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_the_size_check_sees_a_long_function() -> None:
    body = "".join(f"    x{n} = {n}\n" for n in range(60))
    assert oversized(f"def long():\n{body}", "m.py") == ["m.py: long is 61 lines (at most 59)"]
    assert oversized("def short():\n    return 1\n", "m.py") == []
