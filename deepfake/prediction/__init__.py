"""predict.py's room: inputs (images, videos) to one probability of fake each, in memory.

`driver` is predict.py's driver: each window of inputs (`windows`) is sorted by content (`inputs`), its images
scored through the ensemble (`images`) and its videos handed to `run`. A video is decoded (`deepfake.extraction.decode_pool`), its faces found
(`deepfake.extraction.face_finder`) and cropped (`deepfake.extraction.crops`) exactly as extract.py did for
training, scored through one callable (`score.Scorer`: the ensemble of `deepfake.evaluation.ensemble`, TTA and
temperatures included), aggregated (`deepfake.evaluation.aggregate`) and described in one row (`rows`), with an
optional contact sheet (`preview`). At scale: inputs read lazily (`sources`, `plan`), scored a window at a
time in input order (`windows`), each row committed as it comes (`store`: resume, shards, the merged output).

May import: every room below it; in practice the ground floor, system, runs, data, model, extraction and
evaluation. Never training.
"""
