"""The deepfake model, one room: what a checkpoint's weights belong to.

`detector` builds it (`get_model`, `DeepfakeDetector`: a timm backbone, normalisation on the device, a head),
`weights` reads backbone weight files, and the families `get_model` composes with any backbone from
`model.streams`, `model.fusion`, `model.mask_head` and `model.frames`: `streams` (SRM and DCT filters, each
stream's stem), `fusion` (early and late), `mask_head` (the blend-mask decoder and its loss) and `temporal`
(the clip model's head over a video's frames).

May import: the ground floor (`errors`, `choices`), `deepfake.system`, `deepfake.runs` and `deepfake.data`
(the mask channel's encoding). Rooms above it import it; it imports none of them.
"""
