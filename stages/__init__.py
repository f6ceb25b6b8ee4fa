"""The DVC stages' entry points (`python -m stages.<name>`).

Every stage runs with the portable kernel choice of har/numerics.py, set here, before any stage module
imports NumPy or TensorFlow: the same params and data give the same outputs to the bit on any x86-64 CPU.
"""
from har.numerics import pin

pin()
