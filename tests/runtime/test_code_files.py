"""Which files make a handler's code: what hot reload compares (`runtime.project.code_files`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.project.code_files import code_files

TREE = {
    "h.py": "import helpers\nfrom pkg import sub\nimport json\n"
            "def handle(event):\n    from lazy import x\n    return x\n",
    "helpers.py": "import deep\n",
    "deep.py": "",
    "lazy.py": "x = 1\n",
    "pkg/__init__.py": "",
    "pkg/sub.py": "from . import sibling\nfrom .sub import q\n",
    "pkg/sibling.py": "",
    "other.py": "import h\n",  # imports the handler; the handler does not import it
    "broken.py": "def (\n",
    "cycle_a.py": "import cycle_b\n",
    "cycle_b.py": "import cycle_a\n",
}


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def names(root: Path, handler: str) -> list[str]:
    return [str(p.relative_to(root)) for p in code_files(root / handler)]


def test_imports_are_followed_transitively_inside_the_handlers_folder(tmp_path: Path) -> None:
    root = tree(tmp_path, TREE)
    assert names(root, "h.py") == [
        "deep.py", "h.py", "helpers.py", "lazy.py", "pkg/__init__.py", "pkg/sibling.py",
        "pkg/sub.py",
    ]


@pytest.mark.parametrize(("handler", "wanted"), [
    ("other.py", ["deep.py", "h.py", "helpers.py", "lazy.py", "other.py", "pkg/__init__.py",
                  "pkg/sibling.py", "pkg/sub.py"]),
    ("cycle_a.py", ["cycle_a.py", "cycle_b.py"]),
    ("deep.py", ["deep.py"]),
])
def test_cycles_and_leaves(tmp_path: Path, handler: str, wanted: list[str]) -> None:
    assert names(tree(tmp_path, TREE), handler) == wanted


def test_a_file_that_does_not_parse_is_still_part_of_the_code(tmp_path: Path) -> None:
    root = tree(tmp_path, {"h.py": "import broken\n", "broken.py": "def (\n"})
    assert names(root, "h.py") == ["broken.py", "h.py"]


def test_a_module_created_later_that_shadows_an_import_joins_the_code(tmp_path: Path) -> None:
    root = tree(tmp_path, {"h.py": "import json\nimport helpers\n"})
    assert names(root, "h.py") == ["h.py"]
    tree(root, {"json.py": "", "helpers.py": "import deep\n"})
    assert names(root, "h.py") == ["h.py", "helpers.py", "json.py"]
    tree(root, {"deep.py": ""})  # parsed again: helpers.py did not change, deep.py appeared
    assert names(root, "h.py") == ["deep.py", "h.py", "helpers.py", "json.py"]
