"""Building blocks of the schedule family: vectorised kernels and the matched-entropy calibration.

The public API is ``ead_core.schedule`` (the schedule classes, ``schedule_from_dict``); the kernels here are
shared by those classes and by the samplers' per-row paths (the vLLM processor), so both compute the same numbers.
"""
