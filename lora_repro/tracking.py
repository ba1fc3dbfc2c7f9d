"""Weights & Biases as the live view of a run; the record on disk stays the store.

Offline by default (sync later with `wandb sync`); `logger=none` switches it off. Nothing W&B does
may fail or stall a run: a missing package, a failed init or a failed log only prints a warning.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class Tracker:
    """One W&B run per job: group = experiment, tags for the run's coordinates."""

    def __init__(self, logger_cfg: dict, record: dict, run_dir):
        self.run = None
        if (logger_cfg or {}).get("name", "none") == "none":
            return
        mode = logger_cfg.get("mode") or os.environ.get("WANDB_MODE", "offline")
        if mode == "disabled":
            return
        try:
            import wandb

            tags = [
                f"model={record['model']}", f"task={record['task']}", f"method={record['method']}",
                f"targets={','.join(record.get('targets') or [])}", f"rank={record.get('rank')}",
                f"seed={record['seed']}", f"tier={record['tier']}",
            ]
            self.run = wandb.init(
                project=logger_cfg.get("project", "lora-repro"),
                entity=logger_cfg.get("entity"),
                group=record["experiment"],
                name=f"{record['experiment']}-{record['run_id']}",
                id=record["run_id"],
                resume="allow",
                tags=tags,
                config=record["config"],
                dir=str(run_dir),
                mode=mode,
                settings=wandb.Settings(init_timeout=60, silent=True),
                reinit="finish_previous",
            )
        except Exception as err:  # noqa: BLE001 - W&B must never fail a run
            log.warning("W&B is unavailable (%s: %s); the run goes on without it", type(err).__name__, err)
            self.run = None

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B log failed (%s); continuing", err)

    def summary(self, values: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(values)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B summary failed (%s); continuing", err)

    def finish(self, failed: bool = False) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed (%s)", err)
        self.run = None
