"""The CPU MTCNN runs channels-last: its max-pools take the fast path, and it finds the faces NCHW finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from deepfake.extraction.face_finder import MtcnnFinder


@pytest.mark.slow  # importing facenet-pytorch alone takes ~1.7 s
def test_cpu_mtcnn_pools_channels_last_and_finds_what_nchw_finds() -> None:
    """NCHW max-pooling took a third of the CPU MTCNN's time (4-16x slower than channels-last); the boxes,
    scores and landmarks must stay NCHW's up to float rounding, so crops stay those of earlier extractions."""
    detector = MtcnnFinder("cpu")
    reference = MtcnnFinder("cpu")
    reference.model.to(memory_format=torch.contiguous_format)
    layouts: dict[str, list[bool]] = {"cl": [], "nchw": []}
    for name, model in (("cl", detector.model), ("nchw", reference.model)):
        for module in model.modules():
            if isinstance(module, nn.MaxPool2d):
                module.register_forward_hook(
                    lambda m, i, o, seen=layouts[name]: seen.append(
                        i[0].is_contiguous(memory_format=torch.channels_last)
                    )
                )
    photo = np.ascontiguousarray(data.astronaut()[:256:2, 64:320:2])  # 128 px, one face of about 50 px
    frames = [photo, np.ascontiguousarray(photo[:, ::-1])]
    found, expected = detector.detect(frames), reference.detect(frames)
    assert layouts["cl"] and all(layouts["cl"])  # P-, R- and O-net pools all on channels-last input
    assert not any(layouts["nchw"])  # the reference really is NCHW
    assert [len(f) for f in found] == [len(f) for f in expected] == [1, 1]
    for f, e in zip(found, expected, strict=True):
        np.testing.assert_allclose(f[0].box, e[0].box, atol=1e-3)
        np.testing.assert_allclose(f[0].landmarks, e[0].landmarks, atol=1e-3)
        assert f[0].score == pytest.approx(e[0].score, abs=1e-5)
