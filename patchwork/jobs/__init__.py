"""The main job's parts: one module per method, all run through one :class:`MethodJob`.

Each method module has ``run(job, options) -> dict[str, list[row]]``: it trains what it needs
(through :meth:`MethodJob.train`, so every sub-run is a ``scripts/train.py`` run that resumes
the same way) and evaluates its rows (through :meth:`MethodJob.evaluate`, so every row has the
same cost, latency and accuracy columns on the same validation videos). The keys of the
returned dict name tables (``"comparison"`` for the main table; e.g. ``"policy"``, ``"cells"``
for a method's ablations).
"""

from patchwork.jobs.context import MethodJob

__all__ = ["MethodJob"]
