"""Image and video perturbations for robustness tests: the DeeperForensics-1.0 protocol and real JPEG/resize.

The ground floor of the data side: `image` holds the per-image functions (pure: uint8 HWC RGB in, a new uint8
image out, randomness only from the generator passed in), `video` the H.264 re-encode (PyAV's libx264, no
system ffmpeg), `protocol` the table of types and levels, the per-video seeding and the parsing of
`perturb.*`. Numpy, Pillow and PyAV only: extraction's decode workers, which import no torch, use it too.
May import: the ground floor only (`errors`, `choices`, `config.checks`).
"""
