"""The machine: device and precision choice, thread plan, torchrun processes, the resource sampler.

May import: the standard library, torch, psutil/NVML, and `deepfake.errors`. Nothing above it.
"""
