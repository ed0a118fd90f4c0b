"""rayserve: the only package that imports ``ray``.

Owns the applier (connect, observe, deploy, delete), the Ray call plumbing
(one thread, deadlines, GCS probe, error classification) and the builders of
Ray Serve LLM's ``LLMConfig`` and gateway. May import: ``converge`` (its
observation types), ``desired`` (specs), ``config``, ``errors``.
"""
