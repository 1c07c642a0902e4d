"""The code layout the README shows: which layer may import which, no import cycles, folders and modules kept small,
the README's tree equal to the files on disk, and saved outputs that name no module of this project (so moving a
module never breaks a folder saved before the move)."""

from __future__ import annotations

import ast
import io
import json
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pose_data", "model", "pipelines")

# Subpackages in import order: a module may import its own subpackage and those of a lower rank, never a higher or an
# equal one. "" is the package's own top-level modules (pose_data's plumbing).
RANKS = {
    "pose_data": {"files": 0, "http": 0, "media": 1, "": 2, "pose": 3, "skeleton": 4, "extract_poses": 5, "laion": 5, "hdvila": 5},
    "model": {"nets": 0, "datasets": 1, "generation": 2, "training": 3, "evaluation": 3},
}
MAX_MODULES_PER_FOLDER = 12
MAX_MODULE_LINES = 400


def project_modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name (``__init__`` as the package's name)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
    return {name for name in names if name.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {dep for dep in imports_of(path) if dep in modules and dep != name} for name, path in modules.items()}


def test_the_building_blocks_import_no_higher_layer(graph):
    wrong = [(name, dep) for name, deps in graph.items() for dep in deps
             if (name.startswith("pose_data") and dep.split(".")[0] in ("pipelines", "model"))
             or (name.startswith("model") and dep.split(".")[0] == "pipelines")]  # fmt: skip
    assert wrong == []
    assert any(dep.startswith("model.") for dep in graph["pipelines.demo"])  # the check sees imports across packages


SUBPACKAGES = {name for name, path in project_modules().items() if path.name == "__init__.py" and "." in name}


def subpackage(name: str) -> tuple[str, str]:
    """``("model", "nets")`` for ``model.nets.pose_encoder`` and ``model.nets``; ``("pose_data", "")`` for
    ``pose_data.config`` (a top-level module) and ``pose_data``."""
    parts = name.split(".")
    if len(parts) > 2 or ".".join(parts[:2]) in SUBPACKAGES:
        return parts[0], parts[1]
    return parts[0], ""


def test_subpackages_import_only_lower_ones(graph):
    assert {name.split(".", 1)[1] for name in SUBPACKAGES if name.startswith("model.")} == set(RANKS["model"])
    assert {name.split(".", 1)[1] for name in SUBPACKAGES if name.startswith("pose_data.")} | {""} == set(RANKS["pose_data"])
    wrong = []
    for name, deps in graph.items():
        package, own = subpackage(name)
        for dep in deps:
            dep_package, other = subpackage(dep)
            if package in RANKS and dep_package == package and other != own and RANKS[package][other] >= RANKS[package][own]:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_no_import_cycles(graph):
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                return [*trail, name, dep]
            if dep not in state and (cycle := visit(dep, [*trail, name])):
                return cycle
        state[name] = 2
        return None

    cycles = [cycle for name in sorted(graph) if name not in state and (cycle := visit(name, []))]
    assert cycles == []


def test_folders_and_modules_stay_small():
    modules = project_modules()
    folders: dict[Path, int] = {}
    for path in modules.values():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    assert {str(folder.relative_to(REPO)): n for folder, n in folders.items() if n > MAX_MODULES_PER_FOLDER} == {}
    long = {str(path.relative_to(REPO)): n for path in modules.values() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
    docless = [name for name, path in modules.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert docless == []


def readme_tree() -> set[str]:
    """The paths the README's code-layout tree names: ``name/`` folders and ``name.py`` modules, nested by indent."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Code layout\n+```text\n(.*?)```", text, re.S)
    assert match, "the README's code-layout tree is gone"
    paths, stack = set(), []
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"odd indent: {line!r}"
        name = line.split()[0]
        assert re.fullmatch(r"[\w.]+/|\w+\.py", name), f"not one folder or module: {line!r}"
        stack = stack[: indent // 2]
        paths.add("/".join([*stack, name.rstrip("/")]) + ("/" if name.endswith("/") else ""))
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    return paths


def test_the_readme_tree_is_the_code_on_disk():
    tree = readme_tree()
    on_disk = {str(path.relative_to(REPO)) for path in project_modules().values() if path.name != "__init__.py"}
    on_disk |= {f"{path.relative_to(REPO).parent}/" for path in project_modules().values() if path.name == "__init__.py"}
    assert {p for p in tree if p.split("/")[0] in PACKAGES and (p.endswith(".py") or (REPO / p / "__init__.py").exists())} == on_disk
    missing = sorted(p for p in tree if not (REPO / p).exists())
    assert missing == []


def pickled_modules(data: bytes) -> set[str]:
    """The modules a pickle would import (GLOBAL / STACK_GLOBAL), including torch's zip files' ``data.pkl``."""
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return set().union(*(pickled_modules(archive.read(n)) for n in archive.namelist() if n.endswith(".pkl")))
    modules, strings = set(), []
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            modules.add(arg.split(" ")[0])
        elif opcode.name == "STACK_GLOBAL":
            modules.add(strings[-2])
        elif isinstance(arg, str):
            strings.append(arg)
    return modules


def names_a_project_module(text: str) -> list[str]:
    found = re.findall(r"\b(?:pose_data|model|pipelines)(?:\.\w+)+", text)
    return [name for name in found if any(name == m or name.startswith(m + ".") for m in project_modules() if "." in m)]


@pytest.mark.slow
def test_saved_outputs_name_no_module_of_this_project(tmp_path):
    """Every file the demo writes (datasets, both training runs with their checkpoints, poses, the generated video and
    its sidecar, the evaluation and its journal) and a saved pipeline folder: no pickle imports a module of this
    project and no text names one, so folders saved before a module moved load after it (nothing records where code
    lives)."""
    demo = tmp_path / "demo"
    proc = subprocess.run([str(Path(sys.executable).parent / "pose-data"), "demo", "--output", str(demo), "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline

    pipe = FollowYourPosePipeline.from_parts(demo / "tiny-sd", pose_encoder=demo / "stage1" / "pose_encoder",
                                             video_layers=demo / "stage2" / "video_layers")  # fmt: skip
    pipe.save_pretrained(tmp_path / "pipeline")
    files = [p for root in (demo, tmp_path / "pipeline") for p in root.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix in (".pkl", ".bin", ".pt", ".pth")]
    assert {p.name for p in pickles} >= {"optimizer.bin", "scheduler.bin", "random_states_0.pkl"}
    texts = [p for p in files if p.suffix in (".json", ".jsonl", ".yaml", ".txt", ".csv")]
    assert {p.name for p in texts} >= {"training_state.json", "fyp_pipeline.json", "manifest.json", "summary.json", "plan.json"}
    imported = {str(p.relative_to(tmp_path)): sorted(m for m in pickled_modules(p.read_bytes()) if m.split(".")[0] in PACKAGES)
                for p in pickles}  # fmt: skip
    assert {name: modules for name, modules in imported.items() if modules} == {}
    assert any(pickled_modules((p).read_bytes()) for p in pickles)  # the scan sees the globals pickles do import
    named = {str(p.relative_to(tmp_path)): names_a_project_module(p.read_text(errors="replace")) for p in texts}
    assert {name: found for name, found in named.items() if found} == {}
    assert names_a_project_module(json.dumps({"x": "see pose_data.media.video_decode"})) == ["pose_data.media.video_decode"]
