"""A GPU performance model that needs no GPU (issue 10): see ``benchmarks/gpu_model.py``."""
