"""``fyp-app``'s page (Gradio Blocks): the upload, the prompt and settings, the two buttons, their outputs.

Every callback goes through :mod:`model.app.handlers`; an :class:`AppInputError` becomes ``gr.Error`` (a message in
the page), any other failure a one-line ``gr.Error`` too, its traceback only in the app's log. Both buttons share
one queue slot (``concurrency_id="model"``, limit 1): one model, one job at a time. Progress bars follow the frames
extracted and the window-steps sampled.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import gradio as gr

from model.app import handlers
from model.app.handlers import AppInputError
from model.app.session_files import SessionFiles
from pose_data.pose.estimator import BACKENDS
from pose_data.skeleton.render import SKELETON_STYLES

log = logging.getLogger("fyp-app")
KIND_CHOICES = [("auto-detect (as fyp-generate)", "auto"), ("driving video: extract its poses", "driving_video"),
                ("skeleton video: use it as it is", "skeleton_video")]  # fmt: skip


def page_errors(fn):
    """Bad input -> ``gr.Error`` with the handler's message; anything else -> a one-line ``gr.Error``, logged."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except AppInputError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - never a traceback in the page
            log.exception("fyp-app: %s failed", fn.__name__)
            raise gr.Error(f"internal error: {handlers.one_line(err)} (details in the app's log)", print_exception=False) from None

    return wrapped


def build_ui(pipe, files: SessionFiles, *, pose_backend: str = "mmpose", examples: list[str] | None = None) -> gr.Blocks:
    """The page for the loaded ``pipe``; temporary files under ``files`` (a folder per session)."""
    size = pipe.default_size
    with gr.Blocks(title="Follow Your Pose") as demo:
        gr.Markdown("# Follow Your Pose\nUpload a driving video (a person moving) or a skeleton video, press **Extract poses** "
                    "to check the poses, then **Generate**.")  # fmt: skip
        state = gr.State(None)
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="driving or skeleton video", file_types=["video"], type="filepath", elem_id="upload")
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[upload], label="bundled examples")
                kind = gr.Radio(KIND_CHOICES, value="auto", label="the upload is", elem_id="kind")
                prompt = gr.Textbox(label="prompt", placeholder="an astronaut dancing on the moon", elem_id="prompt")
                negative = gr.Textbox(label="negative prompt", elem_id="negative")
                with gr.Accordion("settings", open=False):
                    with gr.Row():
                        frames = gr.Number(0, label="frames (0: every pose frame)", precision=0, minimum=0, elem_id="frames")
                        window = gr.Number(8, label="window (frames)", precision=0, minimum=2, elem_id="window")
                        steps = gr.Number(50, label="steps", precision=0, minimum=1, elem_id="steps")
                        guidance = gr.Number(12.5, label="guidance", elem_id="guidance")
                    with gr.Row():
                        seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="seed")
                        random_seed = gr.Checkbox(False, label="random seed", elem_id="random-seed")
                        height = gr.Number(size, label="height", precision=0, step=pipe.size_multiple, elem_id="height")
                        width = gr.Number(size, label="width", precision=0, step=pipe.size_multiple, elem_id="width")
                    with gr.Row():
                        fps = gr.Number(8, label="fps", minimum=0.1, elem_id="fps")
                        pose_scale = gr.Number(1.0, label="pose scale", elem_id="pose-scale")
                        side_by_side = gr.Checkbox(True, label="skeleton side by side", elem_id="side-by-side")
                    with gr.Row():
                        backend = gr.Dropdown(list(BACKENDS), value=pose_backend, label="pose backend (driving video)", elem_id="backend")
                        style = gr.Dropdown([("the pose encoder's", "")] + [(s, s) for s in SKELETON_STYLES], value="",
                                            label="skeleton style", elem_id="style")  # fmt: skip
                        allow_mismatch = gr.Checkbox(False, label="allow a style mismatch", elem_id="allow-mismatch")
                with gr.Row():
                    extract_btn = gr.Button("Extract poses", elem_id="extract")
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                skeleton = gr.Video(label="poses the model follows", interactive=False, elem_id="skeleton")
                result = gr.Video(label="generated video", interactive=False, elem_id="result")
                downloads = gr.File(label="download: mp4 + JSON sidecar", file_count="multiple", interactive=False, elem_id="downloads")
        # the form by setting name: each callback takes the page's values as one dict keyed by component
        form = {"num_frames": frames, "window": window, "steps": steps, "guidance": guidance, "seed": seed, "random_seed": random_seed,
                "height": height, "width": width, "fps": fps, "pose_scale": pose_scale, "side_by_side": side_by_side,
                "negative_prompt": negative, "pose_backend": backend, "skeleton_style": style, "allow_style_mismatch": allow_mismatch}  # fmt: skip

        def settings(values: dict) -> handlers.VideoSettings:
            return handlers.form_settings(**{name: values[component] for name, component in form.items()})

        def extract(values: dict, request: gr.Request, progress) -> handlers.ExtractedPoses:
            if not values[upload]:
                raise AppInputError("upload a video first (a driving video or a skeleton video)")

            def on_frames(done, total):
                progress((done, total) if total else None, desc="extracting poses", unit="frames")

            return handlers.extract_poses(pipe, values[upload], files.session(request.session_hash), settings(values),
                                          kind=values[kind], on_frames=on_frames)  # fmt: skip

        @page_errors
        def on_extract(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio asks for a progress bar
            poses = extract(values, request, progress)
            return poses, str(poses.preview), handlers.markdown_text(poses.message)

        @page_errors
        def on_generate(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - how Gradio asks for a progress bar
            wanted, poses, text = settings(values), values[state], values[prompt]
            if not text or not text.strip():
                raise AppInputError("type a prompt first")
            upload_kind = values[kind] if values[kind] != "auto" else getattr(poses, "kind", None)
            if poses is None or poses.key != handlers.extraction_key(values[upload], upload_kind, wanted, pipe.skeleton_style):
                poses = extract(values, request, progress)  # not extracted yet, or with other settings
            made = handlers.generate_video(pipe, poses, text, files.session(request.session_hash), wanted,
                                           on_step=lambda done, total: progress((done, total), desc="generating", unit="window-steps"))  # fmt: skip
            return poses, str(poses.preview), str(made.video), [str(made.video), str(made.sidecar)], handlers.markdown_text(f"{poses.message}; video: {made.message}")

        model_slot = {"concurrency_limit": 1, "concurrency_id": "model"}
        extract_btn.click(on_extract, {upload, kind, *form.values()}, [state, skeleton, status], **model_slot)
        generate_btn.click(on_generate, {state, upload, kind, prompt, *form.values()}, [state, skeleton, result, downloads, status], **model_slot)

        def on_unload(request: gr.Request):
            files.end_session(request.session_hash)

        demo.unload(on_unload)
    return demo


def example_videos() -> list[str]:
    """The bundled driving video(s) offered as examples."""
    from importlib import resources

    folder = Path(str(resources.files("pose_data") / "sample_data" / "driving"))
    return [str(p) for p in sorted(folder.glob("*.mp4"))]
