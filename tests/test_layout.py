"""The code layout the README shows: which layer may import which, no import cycles, folders and modules kept small,
the README's tree equal to the files on disk, and saved outputs that name no module of this project (so moving a
module never breaks a folder saved before the move)."""

from __future__ import annotations

import ast
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pose_data", "model", "pipelines")

# What each part may import besides itself, as its __init__.py says: "model.nets" is a subpackage, "pose_data" the
# package's own top-level modules (the plumbing), "model" the top-level model/cli.py, "pose_data.*" every part of it.
PLUMBING = "pose_data"
ALLOWED = {
    "pose_data.files": set(),
    "pose_data.http": set(),
    "pose_data.media": {"pose_data.files"},
    PLUMBING: {"pose_data.files", "pose_data.media"},
    "pose_data.pose": {"pose_data.files", "pose_data.media", PLUMBING},
    "pose_data.skeleton": {"pose_data.pose"},
    "pose_data.extract_poses": {"pose_data.pose", "pose_data.skeleton", "pose_data.media", "pose_data.files", PLUMBING},
    "pose_data.laion": {"pose_data.pose", "pose_data.skeleton", "pose_data.media", "pose_data.http", "pose_data.files", PLUMBING},
    "pose_data.hdvila": {"pose_data.media", "pose_data.http", "pose_data.files", PLUMBING},
    "model.nets": {"pose_data.files"},
    "model.datasets": {"pose_data.*"},
    "model.generation": {"model.nets", "model.datasets", "pose_data.*"},
    "model.training": {"model.nets", "model.datasets", "model.generation", "pose_data.*"},
    "model.evaluation": {"model.nets", "model.datasets", "model.generation", "pose_data.*"},
    "model.app": {"model.generation", "model.nets", "pose_data.*"},
    "model": {"model.training"},
    "pipelines": {"pose_data.*", "model.*"},
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


def part(name: str) -> str:
    """The part of the layout a module belongs to: ``model.nets`` for ``model.nets.pose_encoder`` (and for the package
    ``model.nets`` itself), ``pose_data`` for the top-level ``pose_data.config``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or ".".join(parts[:2]) in SUBPACKAGES else parts[0]


def may_import(importer: str, imported: str) -> bool:
    """Whether the part ``importer`` may import the part ``imported``."""
    allowed = ALLOWED[importer]
    return imported == importer or imported in allowed or imported.split(".")[0] + ".*" in allowed


def test_every_part_of_the_layout_has_its_rule():
    assert {part(name) for name in project_modules()} == set(ALLOWED)


def test_each_part_imports_only_what_its_docstring_allows(graph):
    wrong = sorted(f"{name} -> {dep}" for name, deps in graph.items() for dep in deps if not may_import(part(name), part(dep)))
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
    match = re.search(r"## Code layout\n[^#]*?```text\n(.*?)```", text, re.S)
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


PROJECT_MODULES = sorted(name for name in project_modules() if "." in name)


def names_a_project_module(data: bytes) -> list[str]:
    """The dotted names of this project's modules (or of things inside them) that ``data`` holds anywhere: a pickle
    writes the modules it imports as plain text (torch's zip files store their ``data.pkl`` uncompressed), as JSON,
    YAML, tar headers, parquet footers and mp4 comment tags write theirs."""
    found = {m.decode() for m in re.findall(rb"\b(?:pose_data|model|pipelines)(?:\.\w+)+", data)}
    return sorted(name for name in found if any(name == m or name.startswith(m + ".") for m in PROJECT_MODULES))


@pytest.mark.slow
def test_saved_outputs_name_no_module_of_this_project(tmp_path):
    """Every file the demo writes (datasets, both training runs with their checkpoints and logs, poses, the generated
    video and its sidecar, the evaluation and its journal) and a saved pipeline folder: none names a module of this
    project, so folders saved before a module moved load after it (nothing records where code lives)."""
    demo = tmp_path / "demo"
    proc = subprocess.run([str(Path(sys.executable).parent / "pose-data"), "demo", "--output", str(demo), "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline

    pipe = FollowYourPosePipeline.from_parts(demo / "tiny-sd", pose_encoder=demo / "stage1" / "pose_encoder",
                                             video_layers=demo / "stage2" / "video_layers")  # fmt: skip
    pipe.save_pretrained(tmp_path / "pipeline")
    files = [p for root in (demo, tmp_path / "pipeline") for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert names >= {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", "training_state.json", "fyp_pipeline.json",
                     "manifest.json", "summary.json", "plan.json", "scored.jsonl", "keypoints.parquet", "carphone.mp4"}  # fmt: skip
    found = {str(p.relative_to(tmp_path)): names_a_project_module(p.read_bytes()) for p in files}
    assert {name: modules for name, modules in found.items() if modules} == {}
    # the scan sees module names where files hold them: the pickled optimizer names torch's, a note would name ours
    optimizer = next(p for p in files if p.name == "optimizer.bin").read_bytes()
    assert re.search(rb"torch\._utils", optimizer) or re.search(rb"collections", optimizer)
    assert names_a_project_module(b'{"x": "see pose_data.media.video_decode"}') == ["pose_data.media.video_decode"]
    assert names_a_project_module(pickle.dumps(FollowYourPosePipeline)) == ["model.generation.follow_your_pose_pipeline"]


def test_the_old_module_name_of_fyp_train_still_runs():
    """``python -m model.cli`` (what ``accelerate launch -m model.cli`` runs) is ``fyp-train``."""
    old = subprocess.run([sys.executable, "-m", "model.cli", "--help"], capture_output=True, text=True, timeout=300)
    new = subprocess.run([str(Path(sys.executable).parent / "fyp-train"), "--help"], capture_output=True, text=True, timeout=300)
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout and "stage1" in old.stdout
