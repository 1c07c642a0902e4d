"""``fyp-app`` without a browser: its handlers through the CLIs' code paths (extract-poses' folder, fyp-generate's
video and sidecar, equal for equal settings and seed), bad input as one-line messages, the per-session temporary
files, the command line, and the page's queue settings."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from app_models import SIZE, make_tiny_parts
from model.app import handlers
from model.app.handlers import AppInputError, extract_poses, form_settings, generate_video
from model.app.session_files import SessionFiles

CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return make_tiny_parts(tmp_path_factory.mktemp("app-models"))


@pytest.fixture(scope="module")
def pipe(parts):
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline

    return FollowYourPosePipeline.from_parts(parts["base"], parts["pose_encoder"], parts["video_layers"])


def settings(**changes):
    values = {"num_frames": 12, "steps": 2, "height": SIZE, "width": SIZE, "seed": 3, "pose_backend": "mediapipe"}
    return form_settings(**{**values, **changes})


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def extracted(pipe, tmp_path_factory):
    calls = []
    poses = extract_poses(pipe, CARPHONE, tmp_path_factory.mktemp("session"), settings(), on_frames=lambda d, t: calls.append((d, t)))
    return poses, calls


def test_extract_runs_extract_poses_code_on_a_driving_video(extracted, tmp_path):
    from pipelines.extract_poses import extract_poses as extract_poses_cli
    from pose_data.config import load_config
    from pose_data.extract_poses.config import ExtractPosesConfig, preset_or_file

    poses, calls = extracted
    assert poses.kind == "driving_video" and poses.frames == 12 and poses.upload == "carphone.mp4"
    assert poses.skeleton.name == "skeleton.mp4" and len(decode(poses.skeleton)) == 12
    assert [f.shape for f in decode(poses.preview)] == [(SIZE, SIZE, 3)] * 12  # the frames the model gets
    assert calls and calls[-1][0] == 12 and all(b >= a for (a, _), (b, _) in zip(calls, calls[1:]))
    assert "12 pose frame(s)" in poses.message
    # pose-data extract-poses (MediaPipe, 8 fps, openpose) on the same video finds the same people in the same frames
    cfg = load_config(ExtractPosesConfig, preset_or_file("tiny"))
    extract_poses_cli([str(CARPHONE)], str(tmp_path), cfg, progress=False)
    cli = pq.read_table(tmp_path / "carphone" / "keypoints.parquet").to_pandas().head(12)
    app = pq.read_table(poses.skeleton.parent / "keypoints.parquet").to_pandas()
    assert list(app["frame"]) == list(cli["frame"]) and list(app["status"]) == list(cli["status"])
    for a, b in zip(app["keypoints"], cli["keypoints"]):
        assert np.allclose(np.stack([np.stack(p) for p in a]), np.stack([np.stack(p) for p in b]), atol=1e-4)


def test_generate_equals_fyp_generate_for_equal_settings_and_seed(pipe, parts, extracted, tmp_path, capsys):
    from model.generation.cli import main as generate_main

    poses, _ = extracted
    steps = []
    made = generate_video(pipe, poses, "a man talking on the phone", tmp_path / "app", settings(), on_step=lambda d, t: steps.append((d, t)))
    assert made.video.name == "carphone-seed3.mp4" and made.seed == 3 and made.frames == 12
    assert steps == [(i, 4) for i in range(1, 5)]  # 2 steps x 2 windows (12 frames, window 8)
    cli_out = tmp_path / "cli" / "clip.mp4"
    code = generate_main(["--base", parts["base"], "--pose-encoder", parts["pose_encoder"], "--video-layers", parts["video_layers"],
                          "--pose", str(poses.skeleton), "--prompt", "a man talking on the phone", "--output", str(cli_out),
                          "--num-frames", "12", "--steps", "2", "--height", str(SIZE), "--width", str(SIZE), "--seed", "3",
                          "--side-by-side", "--source-kind", "skeleton_video", "--pose-backend", "mediapipe", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    app_frames, cli_frames = decode(made.video), decode(cli_out)
    assert len(app_frames) == len(cli_frames) == 12 and app_frames[0].shape == (SIZE, 2 * SIZE, 3)
    assert all(np.array_equal(a, b) for a, b in zip(app_frames, cli_frames))
    app_sidecar, cli_sidecar = json.loads(made.sidecar.read_text()), json.loads((cli_out.parent / "clip.mp4.json").read_text())
    assert app_sidecar["settings"] == cli_sidecar["settings"] and app_sidecar["settings"]["seed"] == 3
    assert app_sidecar["windows"] == cli_sidecar["windows"] == [[0, 8], [4, 8]]
    # another seed: another video
    other = generate_video(pipe, poses, "a man talking on the phone", tmp_path / "app", settings(seed=4))
    assert not np.array_equal(decode(other.video)[0], app_frames[0])


def test_a_random_seed_is_drawn_recorded_and_names_the_file(pipe, extracted, tmp_path):
    poses, _ = extracted
    made = generate_video(pipe, poses, "a man", tmp_path, settings(num_frames=4, random_seed=True))
    sidecar = json.loads(made.sidecar.read_text())
    assert sidecar["seed"] == made.seed == sidecar["settings"]["seed"] and made.video.name == f"carphone-seed{made.seed}.mp4"
    assert len(decode(made.video)) == 4


def test_a_skeleton_video_is_used_as_it_is_and_its_style_checked(pipe, extracted, tmp_path):
    poses, _ = extracted
    again = extract_poses(pipe, poses.skeleton, tmp_path, settings(num_frames=8))
    assert again.kind == "skeleton_video" and again.skeleton == poses.skeleton and again.frames == 8
    forced = extract_poses(pipe, CARPHONE, tmp_path, settings(num_frames=8), kind="skeleton_video")  # the user's override
    assert forced.kind == "skeleton_video" and forced.skeleton == CARPHONE
    with pytest.raises(AppInputError, match=r"^the poses of carphone\.mp4 is drawn in the 'mmpose' skeleton style but the pose encoder was trained on 'openpose'.* or tick 'allow a style mismatch'$"):
        extract_poses(pipe, CARPHONE, tmp_path, settings(num_frames=4, skeleton_style="mmpose"))
    allowed = extract_poses(pipe, CARPHONE, tmp_path, settings(num_frames=4, skeleton_style="mmpose", allow_style_mismatch=True))
    assert allowed.frames == 4


def test_bad_input_is_one_line_for_the_page(pipe, extracted, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(AppInputError, match=r"^notes\.mp4 is not a video this app can read"):
        extract_poses(pipe, text, tmp_path, settings())
    with pytest.raises(AppInputError, match=r"^the poses of carphone\.mp4 has 32 frame\(s\) and gives 32 pose frame\(s\) at 8 fps but frames is set to 500: lower frames, or sample more densely \(fps\)$"):
        extract_poses(pipe, CARPHONE, tmp_path, settings(num_frames=500))
    with pytest.raises(AppInputError, match="upload a video first"):
        extract_poses(pipe, tmp_path / "missing.mp4", tmp_path, settings())
    with pytest.raises(AppInputError, match="type a prompt first"):
        generate_video(pipe, extracted[0], "  ", tmp_path, settings())
    with pytest.raises(AppInputError, match=r"height must be a positive multiple of 16"):
        generate_video(pipe, extracted[0], "a man", tmp_path, settings(height=70))
    with pytest.raises(AppInputError, match=r"window must be >= 2"):
        form_settings(window=1)
    with pytest.raises(AppInputError, match=r"frames must be a whole number"):
        form_settings(num_frames=2.5)
    with pytest.raises(AppInputError, match=r"pose_backend must be one of"):
        form_settings(pose_backend="nope")
    for field, name in (("guidance", "guidance"), ("fps", "fps"), ("pose_scale", "pose scale")):  # a decimal field left empty
        with pytest.raises(AppInputError, match=rf"^{name} must be a number, got None$"):
            form_settings(**{field: None})
    assert handlers.markdown_text("*[a](b)*_c.mp4") == r"\*\[a\]\(b\)\*\_c\.mp4"  # the upload's name is no Markdown


def test_pose_weights_that_cannot_be_fetched_are_a_message_naming_the_way_out(pipe, tmp_path, monkeypatch):
    """mmpose's 'auto' weights through a proxy that refuses (and an empty torch cache): one line for the page."""
    import urllib.request

    # urlopen's shared opener keeps the proxies of the first call: a fresh one now, the old one back afterwards, so that
    # later tests in this process do not go through this dead proxy
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(AppInputError, match=r"^the pose model could not be loaded \(mmpose detector rtmdet-m .*choose the mediapipe pose"):
        extract_poses(pipe, CARPHONE, tmp_path, settings(num_frames=4, pose_backend="mmpose"))


def test_a_video_whose_frames_are_too_large_is_refused_before_anything_is_read(pipe, tmp_path):
    from pose_data.media.video_writer import write_video

    thin = write_video([np.zeros((400, 16, 3), np.uint8)] * 8, tmp_path / "thin.mp4", 8)  # 16x400: 25 times taller than wide
    work = tmp_path / "session"
    with pytest.raises(AppInputError, match=r"^thin\.mp4: its frames are 16x400 pixels: one side is more than 16 times the other"):
        extract_poses(pipe, thin, work, settings(num_frames=8))
    assert not work.exists()  # refused before extraction or preview


def test_session_files_are_removed_per_session_and_at_exit(tmp_path):
    with SessionFiles(tmp_path) as files:
        one, two = files.session("abc"), files.session("../../evil")
        (one / "x.mp4").write_bytes(b"1")
        assert two.parent == files.root / "sessions" and files.sessions() == ["______evil", "abc"]
        files.end_session("abc")
        assert not one.exists() and two.exists() and files.uploads.is_dir()
        root = files.root
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_cli_flags_and_a_missing_gradio(monkeypatch, capsys, tmp_path):
    from model.app.cli import build_parser, main

    args = build_parser().parse_args(["--base", "b", "--pose-encoder", "p"])
    assert (args.host, args.port, args.max_upload_mb, args.pose_backend) == ("127.0.0.1", 7860, 200, "mmpose")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--base", "b", "--pipeline", "d"])  # one or the other
    assert "not allowed with argument" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["--base", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install .[app]" in err
    monkeypatch.delitem(sys.modules, "gradio")
    pytest.importorskip("gradio")
    assert main(["--pipeline", str(tmp_path)]) == 2
    assert "not a saved FollowYourPosePipeline folder" in capsys.readouterr().err
    assert main(["--base", "b"]) == 2  # a base alone makes no pose-guided video
    assert "--base needs --pose-encoder" in capsys.readouterr().err


def test_max_upload_mb_reaches_gradio_as_whole_bytes():
    pytest.importorskip("gradio")
    from gradio.utils import _parse_file_size

    from model.app.cli import build_parser, launch_options

    for mb, size in (("0.5", 2**19), ("1.5", 3 * 2**19), ("1e6", 10**6 * 2**20)):
        args = build_parser().parse_args(["--base", "b", "--max-upload-mb", mb])
        options = launch_options(args, ["/examples/carphone.mp4"])
        assert _parse_file_size(options["max_file_size"]) == size
        assert options["allowed_paths"] == ["/examples"]  # the sessions' folders are not served by path


def test_a_taken_port_is_one_error_line_and_gradio_caches_inside_the_app_folder(parts, tmp_path):
    import os
    import socket
    import subprocess

    pytest.importorskip("gradio")
    repo, tmp = Path(__file__).resolve().parents[1], tmp_path / "tmp"
    tmp.mkdir()
    code = ("import sys; from model.app.cli import main; rc = main(sys.argv[1:]); import gradio.route_utils as r; "
            "print('cache', r.DEFAULT_TEMP_DIR); sys.exit(rc)")  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-c", code, "--base", parts["base"], "--pose-encoder", parts["pose_encoder"],
                              "--video-layers", parts["video_layers"], "--device", "cpu", "--port", str(port)],
                             capture_output=True, text=True, timeout=300, cwd=repo,
                             env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(repo)})  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("fyp-app:")]
    assert errors == [errors[0]] and errors[0].startswith(f"fyp-app: error: cannot serve on 127.0.0.1:{port}: "), run.stderr[-3000:]
    assert "serving on" not in run.stdout  # said only once the server listens
    cache = Path(run.stdout.split("cache ")[-1].strip())
    assert cache.name == "gradio" and cache.parent.parent == tmp and cache.parent.name.startswith("fyp-app-")  # GRADIO_TEMP_DIR set in time
    assert not (tmp / "gradio").exists() and not list(tmp.glob("fyp-app-*"))  # nothing outside the app's folder, that folder gone


def test_the_page_queues_both_buttons_on_one_model_slot_and_turns_errors_into_messages(pipe, tmp_path):
    gr = pytest.importorskip("gradio")
    from model.app.ui import build_ui, page_errors

    with SessionFiles(tmp_path) as files:
        demo = build_ui(pipe, files, pose_backend="mediapipe")
        fns = {fn.name: fn for fn in demo.fns.values()}
        assert fns["on_extract"].concurrency_limit == fns["on_generate"].concurrency_limit == 1
        assert fns["on_extract"].concurrency_id == fns["on_generate"].concurrency_id == "model"

    @page_errors
    def bad():
        raise AppInputError("notes.mp4 is not a video")

    @page_errors
    def broken():
        raise RuntimeError("boom\nsecond line")

    with pytest.raises(gr.Error, match="notes.mp4 is not a video"):
        bad()
    with pytest.raises(gr.Error) as caught:
        broken()
    assert caught.value.message.startswith("internal error: boom second line") and "Traceback" not in caught.value.message
    assert handlers.safe_stem("../my clip (1).MOV") == "my_clip_1"


def test_the_demo_prints_an_app_command_this_parser_takes(tmp_path):
    import shlex

    from model.app.cli import build_parser
    from pipelines.demo import app_command

    words = shlex.split(app_command(tmp_path / "demo out"))
    assert words[0] == "fyp-app"
    args = build_parser().parse_args(words[1:])
    assert (args.base, args.pose_encoder, args.video_layers) == (str(tmp_path / "demo out" / "tiny-sd"), str(tmp_path / "demo out" / "stage1"),
                                                                 str(tmp_path / "demo out" / "stage2" / "video_layers"))  # fmt: skip
    assert args.pose_backend == "mediapipe" and args.host == "127.0.0.1"


def test_pipeline_flag_loads_a_saved_pipeline_as_fyp_generate_does(pipe, extracted, tmp_path):
    from model.app.cli import build_parser, load_model

    saved = pipe.save_pretrained(tmp_path / "saved")
    loaded = load_model(build_parser().parse_args(["--pipeline", str(saved), "--device", "cpu"]))
    assert loaded.skeleton_style == "openpose" and loaded.sources["base"] == str(saved)
    a = generate_video(pipe, extracted[0], "a man", tmp_path / "a", settings(num_frames=4))
    b = generate_video(loaded, extracted[0], "a man", tmp_path / "b", settings(num_frames=4))
    assert all(np.array_equal(x, y) for x, y in zip(decode(a.video), decode(b.video)))


def test_the_console_script_and_the_extra_are_declared():
    import tomllib

    from model.app import cli

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["fyp-app"] == "model.app.cli:main" and callable(cli.main)
    assert project["optional-dependencies"]["app"] == ["gradio>=6.31,<7"]
    assert any(d.startswith("selenium") for d in project["optional-dependencies"]["dev"])
