"""Batch sizes that change during a run: layouts, gradient-noise statistics, schedules, the controller.

`layout` turns a requested size into microbatch x data-parallel x accumulation; `statistics` turns
the group sums of the statistics step into the norm test, inner-product tests and noise scale
(Lau et al. 2024, arXiv 2412.21124; McCandlish et al. 2018, arXiv 1812.06162); `schedules` decides
the next size; `controller` compiles the plain and statistics steps and picks one per step.
"""
