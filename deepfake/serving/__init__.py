"""serve.py's room: a trained detector behind an HTTP API (FastAPI) and a web page (Gradio), on predict.py's path.

`model` loads the checkpoint(s) once and scores one uploaded file exactly as predict.py scores it (the same
ensemble, face finder, crops and aggregation: `deepfake.prediction`); `uploads` keeps each upload in a private
temp dir and enforces the size and duration limits; `app` is the FastAPI application (routes, token, access
log, bounded concurrency), `page` the Gradio page mounted on it, `server` runs it under uvicorn.

FastAPI, uvicorn, python-multipart and Gradio (the `serve` extra) are imported only in this room.
May import: every room below it; in practice the ground floor, system, runs, evaluation and prediction.
"""
