"""Detector families beyond a backbone: extra input streams (SRM, DCT) and their fusion, and the blend-mask head.

`deepfake.models.get_model` composes them with any timm backbone from `model.streams`, `model.fusion` and
`model.mask_head`.
"""
