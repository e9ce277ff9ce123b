"""Deterministic simulation of the control plane and the data path (see `schedule.py`)."""
