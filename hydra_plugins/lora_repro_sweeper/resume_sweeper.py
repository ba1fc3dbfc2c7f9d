"""A Hydra sweeper that launches only what is missing: `hydra/sweeper=resume` (the default).

It expands the sweep like Hydra's basic sweeper, then drops every job whose run already has a
`done` record, so a sweep run again after preemptions, time-outs or failures submits only the
failed and missing runs (and nothing when all are done). An experiment may give sweep values per
tier under `hydra.sweeper.tiers.<tier>`; values on the command line win over both.
"""


from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override


@dataclass
class ResumeSweeperConf:
    _target_: str = "hydra_plugins.lora_repro_sweeper.resume_sweeper.ResumeSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    tiers: Dict[str, Dict[str, str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="resume", node=ResumeSweeperConf,
                             provider="lora_repro")


class ResumeSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 tiers: Optional[Dict[str, Dict[str, str]]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.tiers = dict(tiers or {})

    def _parse_config(self) -> List[str]:
        params = dict(self.params or {})
        tier = self.config.get("tier")
        if self.tiers and tier not in self.tiers:
            raise ValueError(f"this experiment has no sweep for tier {tier!r}: it has {', '.join(self.tiers)}")
        params.update(self.tiers.get(tier, {}))
        return [f"{k}={v}" for k, v in params.items()]

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        todo = [job for job in jobs if not self._is_done(job)]
        print(f"[lora-repro] sweep: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, "
              f"{len(todo)} to run", flush=True)
        if not todo:
            return []
        size = max_batch_size or len(todo)
        return [todo[i:i + size] for i in range(0, len(todo), size)]

    def _is_done(self, job: List[str]) -> bool:
        from lora_repro.config import resolve
        from lora_repro.records import adopt_twin, read_record

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        if cfg.get("force", False):
            return False
        run_dir = resolve(cfg)["run_dir"]
        record = read_record(run_dir) or adopt_twin(run_dir)  # a twin in another experiment counts
        return bool(record) and record.get("status") == "done"
