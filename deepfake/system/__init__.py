"""The machine and the process: device and precision choice, thread plan, torchrun processes, signals,
the resource sampler.

May import: the top level (`errors`, `config`). Nothing above it (one `TYPE_CHECKING` name from data).
"""
