"""The web page at /: upload or drop a file, read the verdict, the per-frame curve, the most suspicious faces
(their Grad-CAM overlays with `serve.explain=true`) and download the row as JSON.

A Gradio Blocks page mounted on the FastAPI app; it scores through the same `Service.answer` as the API (same
queue, same private folder, same limits). Nothing is fetched from the network: analytics and the version check
are off, there is no share link, and the page's scripts, styles and fonts are Gradio's own packaged files.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from fastapi import FastAPI
from matplotlib.figure import Figure

from deepfake.serving.app import Service
from deepfake.serving.model import Answer
from deepfake.serving.uploads import Refused


def verdict(row: dict[str, Any], meta: dict[str, Any], temperature: str) -> str:
    """The page's verdict line: the call, the probability (calibrated or raw), the threshold, the aggregation."""
    if row["status"] == "error":
        return f"### Cannot score `{row['path']}`\nerror: {row['error']}"
    agg = meta["aggregation"]
    how = f"faces: {agg['faces']} per frame, frames: {agg['frames']}" + (
        f" (k={agg['k']})" if agg["frames"] == "topk" else ""
    )
    call = (row["pred"] or "").upper()
    counts = "" if row["frames_used"] is None else f"; {row['frames_used']} frame(s) with a face"
    note = "\n\nNo face found: the probability is `no_face_prob`." if row["status"] == "no_face" else ""
    return (f"### {call}: probability of fake {row['prob']:.4f} ({temperature})\n"
            f"threshold {meta['threshold']:g} · aggregation {how}{counts} · status {row['status']}{note}")  # fmt: skip


def frame_plot(answer: Answer, threshold: float) -> Figure | None:
    """Per-frame probability of fake against the frame index, with the threshold."""
    if not answer.frame_probs:
        return None
    fig = Figure(figsize=(6, 2.6), layout="constrained")
    ax = fig.add_subplot()
    frames, probs = zip(*answer.frame_probs, strict=True)
    ax.plot(frames, probs, marker="o", markersize=3)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="frame", ylabel="P(fake)", ylim=(0, 1))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def build_page(service: Service, downloads: Path) -> gr.Blocks:
    """The Blocks page; `downloads` is the folder (inside Gradio's cache) the JSON files are written to."""
    model = service.model
    calibrated = model.pcfg.calibrated and any(d.temperature is not None for d in model.loaded)
    temperature = "calibrated" if calibrated else "raw"
    names = ", ".join(Path(d.path).name for d in model.loaded)
    with gr.Blocks(title="deepfake detector", analytics_enabled=False, delete_cache=(600, 600)) as page:
        gr.Markdown(
            f"## Is it fake?\nChecker: `{names}` ({model.device}). Upload or drop a video or a face image."
        )
        upload = gr.File(label="video or face image", type="filepath", file_count="single")
        shown = gr.Markdown(elem_id="verdict")
        curve = gr.Plot(label="probability per frame")
        faces = gr.Gallery(label="most suspicious faces", columns=4, height="auto")
        with gr.Row():
            row_json = gr.Code(label="row", language="json")
            download = gr.File(label="download the row (JSON)")

        async def score(path: str | None) -> tuple[Any, ...]:
            if not path:
                return "", None, [], None, None
            file = Path(path)
            try:
                answer = await service.answer(file, file.name)
            except Refused as refusal:
                return f"### Refused\nerror: {refusal.message}", None, [], None, None
            finally:
                file.unlink(missing_ok=True)  # Gradio's copy of the upload, in the server's private dir
            row = service.api_row(answer)
            out = downloads / uuid.uuid4().hex / f"{Path(row['path']).stem}.json"
            out.parent.mkdir(parents=True)
            out.write_text(json.dumps(row, indent=2))
            gallery = [
                (np.ascontiguousarray(face), f"{prob:.3f} (frame {frame})")
                for face, prob, frame in answer.faces
            ]
            return (verdict(answer.row, service.meta, temperature), frame_plot(answer, service.meta["threshold"]),
                    gallery, json.dumps(row, indent=2), str(out))  # fmt: skip

        upload.upload(score, inputs=upload, outputs=[shown, curve, faces, row_json, download],
                      concurrency_limit=service.max_concurrent, api_name="score")  # fmt: skip
    return page


def mount_page(app: FastAPI, service: Service, downloads: Path) -> FastAPI:
    """Mount the page at / (the API's routes, declared first, keep their paths); a password when one is set."""

    def password(_user: str, given: str) -> bool:
        return service.password is not None and secrets.compare_digest(
            given.encode(), service.password.encode()
        )

    return gr.mount_gradio_app(
        app, build_page(service, downloads), path="/", auth=password if service.password else None,
        auth_message="This detector asks for a password (any user name).", max_file_size=service.max_bytes,
        ssr_mode=False, mcp_server=False, run_history=False, footer_links=["api"],
        server_name="127.0.0.1",
    )  # fmt: skip
