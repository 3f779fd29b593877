"""How a run is kept on disk: atomic files and the log, per-example results and their ids, the
data fingerprint, the run directory and its lock, generated text, tracker copies.

Below `eval/` in the layers (docs/architecture.md): evaluation, methods and training write here,
and the reports in `results/` read from here; nothing here imports them.
"""
