"""The dependency rule, checked: the core knows no vendor, and every adapter named in the
composition root resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot import app

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("adapters", "slack_bolt", "slack_sdk", "discord")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "bot").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_adapter_and_no_vendor_sdk(path: Path) -> None:
    assert not _imports(path) & set(FORBIDDEN_IN_CORE), f"{path.name} imports {_imports(path) & set(FORBIDDEN_IN_CORE)}"


def test_every_adapter_in_the_composition_root_resolves() -> None:
    paths = [*app.ALERT_SOURCES.values(), app.NOTIFY_TOOL, app.LOCAL_SURFACE, app.STANDIN]
    paths += [p for config, classes in app.TOOLS.values() for p in (config, *classes)]
    paths += [p for pair in app.SURFACES.values() for p in pair]
    for dotted in paths:
        assert app.import_string(dotted) is not None, dotted


# The folders of bot/, lowest first: a module may import from its own folder and those before it,
# never from one after it (so ``ls bot`` reads as the architecture, and no import runs back up).
LAYERS = ["model", "audit", "policy", "playbooks", "store", "intake", "loop", "chat", "web", "evaluation"]


def _bot_folders_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "bot":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(LAYERS)


def test_every_folder_of_bot_is_a_layer() -> None:
    folders = {p.name for p in (ROOT / "bot").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS), "a new folder of bot/ needs its place in LAYERS"


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_runs_back_up_between_folders(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    for path in sorted((ROOT / "bot" / layer).rglob("*.py")):
        wrong = _bot_folders_imported(path) & above
        assert not wrong, f"{path.relative_to(ROOT)} imports from {sorted(wrong)}, above {layer}/"


def test_the_core_never_imports_the_demo_stand_in() -> None:
    for path in sorted((ROOT / "bot").rglob("*.py")):
        assert "demo" not in _imports(path), f"{path.relative_to(ROOT)} imports demo/"
