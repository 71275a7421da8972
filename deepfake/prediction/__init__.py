"""The prediction room: whole videos to one probability of fake each, in memory.

Decode (`deepfake.extraction.video`), detect (`deepfake.extraction.face_finder`) and crop
(`deepfake.extraction.crops`) exactly as extract.py did for training, score the crops through one callable
(`score.Scorer`: the ensemble of `deepfake.evaluation.ensemble`, TTA and temperatures included), aggregate faces and frames (`deepfake.evaluation.aggregate`), and describe each video in
one row (`rows`), with an optional contact sheet (`preview`). `deepfake.prediction.driver` drives it.
"""
