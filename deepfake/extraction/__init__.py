"""From downloaded videos to face crops: `python extract.py` (decode, detect, crop, write, resume, shard).

The room for turning videos into faces, and nothing else. `video` decodes kept frames with PyAV, `detectors`
finds faces (MTCNN, YuNet), `crops` is the one crop function (prediction will reuse it in memory), `faces`
writes a video's crops, `sources` lists a layout's videos and this shard's slice, `writer` makes the output
crash-safe and assembles it, `report` shows progress and the summary, `pipeline` runs it all and `config` is
its schema. It may import `deepfake.data` (layouts, manifest rows), `deepfake.errors`, `deepfake.cli`,
`deepfake.runs.fileio` and `deepfake.reporting.progress`; never the training runner.
"""
