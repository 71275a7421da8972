"""The machine and the process: device and precision choice (`hardware`, `precision`), the thread plan
(`threads`), torchrun processes and gathers (`distributed`), signals (`interrupt`), the resource sampler
(`sampler`), and what a person at the console sees (`console`: progress mode, durations).

May import: the ground floor only (`errors`, `choices`). Every room above uses it.
"""
