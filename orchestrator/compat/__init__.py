"""The compatibility seam: every private internal of Ray, Ray Tune, Optuna and W&B this project
uses, each behind one named function or base class, and nothing private used elsewhere.

- :mod:`orchestrator.compat.tune`: Ray Tune (the Optuna searcher's study and trial map, the
  progress table's metrics, ASHA's rung records, Tune's log messages);
- :mod:`orchestrator.compat.ray_wandb`: Ray's W&B integration (the logging actors, their queue);
- :mod:`orchestrator.compat.core`: Ray core (processes in their own session, the GCS client,
  the cluster launcher's schema, Tune's signal handler);
- :mod:`orchestrator.compat.libs`: Optuna's storage and W&B's run-file record format.

:func:`check` lists what an upgrade removed or renamed; ``tests/test_orchestrator_layout.py``
runs it, and a grep there finds no private attribute of these libraries outside this package.
Importing this package imports none of them.
"""

from __future__ import annotations


def check() -> list[str]:
    """What is missing from the installed libraries (empty when everything exists)."""
    from orchestrator.compat import core, libs, ray_wandb, tune

    return [*tune.check(), *ray_wandb.check(), *core.check(), *libs.check()]
