"""Measuring like a record keeper: ``flops`` (FLOPs from the jaxpr), ``stats`` (confidence
intervals, time to target), ``mfu`` (matmul rate, datasheet peaks, compile counting), ``bench`` (N
seeds compiled once), ``report`` (records table and plots), ``runlog`` (the run's log file), ``profile`` (device time by
kernel category from a ``jax.profiler`` trace), ``progress`` (the run's progress bar), ``expected``
(the measured expected results and the end-of-run comparison)."""
