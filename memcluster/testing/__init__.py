"""Test tools for backends, ours and users': the conformance suite and a fake clock."""

from memcluster.testing.clock import FakeClock
from memcluster.testing.conformance import BackendConformance

__all__ = ["BackendConformance", "FakeClock"]
