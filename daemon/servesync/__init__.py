"""servesync: GitOps for Ray Serve LLM."""
__version__ = "0.1.0"
