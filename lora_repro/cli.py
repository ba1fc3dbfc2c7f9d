"""The `lora-repro` command: `train` (Hydra), `plan`, `params` and `analyze` (Section 7 and more).

    lora-repro train model=minilm_l6 task=sst2 method=lora method.rank=8
    lora-repro plan experiment=table_glue tier=paper
    lora-repro params model=roberta_base method=lora method.targets=[q,v] method.rank=8
    lora-repro analyze similarity --help
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: lora-repro <command> [args]

commands:
  train     train one run or a Hydra sweep (-m); e.g. lora-repro train model=minilm_l6 task=sst2
  plan      list every job of a sweep with its settings and status, without training (--csv)
  params    a method's trainable parameters on a meta-device model; e.g. model=roberta_base method=lora
  analyze   analysis of finished runs: similarity | amplification | figures | ... (lora-repro analyze -h)
"""

HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc")


def check_train_args(args: list[str]) -> None:
    """Resolve and validate every job `train` would run, before Hydra starts anything: a bad value
    stops here with one line, no traceback and no record."""
    if any(a.split("=")[0] in HYDRA_FLAGS for a in args):
        return
    from lora_repro import plan

    multirun = "-m" in args or "--multirun" in args
    runs = plan.jobs([a for a in args if not a.startswith("-")], multirun=multirun)
    if not multirun:  # one run: also its targets and ranks on a meta-device model and the run it
        plan.meta_check(runs[0])  # starts from (a sweep leaves that to each job, so the others go on)
        from lora_repro.train import init_source_dir

        init_source_dir(runs[0])


def _user_error(err: Exception) -> int:
    if os.environ.get("LORA_REPRO_TRACEBACK"):
        raise err
    print(f"[lora-repro] error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            from lora_repro import train

            check_train_args(rest)
            sys.argv = ["lora-repro train", *rest]  # Hydra reads sys.argv
            train.hydra_main()
            return 0
        if command == "plan":
            from lora_repro import plan

            return plan.main(rest)
        if command == "params":
            from lora_repro import params

            return params.main(rest)
        if command == "analyze":
            from analysis import cli

            return cli.main(rest)
    except ValueError as err:
        return _user_error(err)
    print(f"unknown command {command!r}: valid commands are train, plan, params, analyze\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
