"""From downloaded videos to face crops: `python extract.py` (decode, find faces, crop, write, resume, shard).

The room for turning videos into faces, and nothing else. `video` decodes kept frames with PyAV, `decode_pool`
decodes videos ahead in workers, `face_finder` finds faces (MTCNN, YuNet), `crops` is the one crop function,
`faces` writes a video's crops, `sources` lists a layout's videos and this shard's slice, `writer` makes the
output crash-safe and assembles it, `report` shows progress and the summary, `settings` records the crop
settings, `pipeline` is the extract driver and `config` its schema. Prediction reuses `video`, `decode_pool`,
`face_finder` and `crops` in memory, never the driver.

May import: the ground floor, `deepfake.system`, `deepfake.runs` and `deepfake.data` (layouts, manifest rows).
"""
