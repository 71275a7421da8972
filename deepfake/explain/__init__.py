"""Explanations: where a detector looks (Grad-CAM through the `grad-cam` library), how well that matches a known
blend mask (the pointing game, the share of heat inside the mask), overlays, and pooled features for
TensorBoard's projector and a t-SNE plot.

The room holds the pieces; `deepfake.prediction`, `deepfake.evaluation` and `deepfake.training` call them.
`grad-cam` (`pytorch_grad_cam`) is imported only inside functions of `cam` and `overlay`, and only once an
explanation is asked for: with explanations off it is never loaded.

May import: the ground floor (`errors`, `choices`), `deepfake.system`, `deepfake.runs`, `deepfake.data`,
`deepfake.model`. Never evaluation, reporting, training or prediction (they call it).
"""
