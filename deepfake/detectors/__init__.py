"""Detector families beyond a backbone with a linear head: extra input streams (SRM, DCT) and their fusion, the
blend-mask head, and the video-level temporal head.

`deepfake.models.get_model` composes them with any timm backbone from `model.streams`, `model.fusion`,
`model.mask_head` and `model.frames`.
"""
