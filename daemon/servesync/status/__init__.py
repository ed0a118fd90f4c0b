"""status: the files users read, and reading them back.

Owns publishing ``index.json``, ``models/<model_key>.json``, the status
page (``index.html``, ``models/<model_key>.html``: :mod:`.pages`) and the
operators' ``metrics.prom`` at the end of each tick, the readers behind
``servesync status``, and the webhook notifications (``notifying``). May import:
``state`` (atomic writes), ``converge`` (records), ``desired`` (issues),
``config``, ``errors``.
"""
