"""The `lora-repro` command: `train` (Hydra) and `analyze` (Section 7 analysis).

    lora-repro train model=minilm_l6 task=sst2 method=lora method.rank=8
    lora-repro analyze similarity --help
"""

from __future__ import annotations

import sys

USAGE = """usage: lora-repro <command> [args]

commands:
  train     train one run or a Hydra sweep (-m); e.g. lora-repro train model=minilm_l6 task=sst2
  analyze   Section 7 analysis: similarity | amplification | figures (lora-repro analyze -h)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from lora_repro import train

        sys.argv = ["lora-repro train", *rest]  # Hydra reads sys.argv
        train.main()
        return 0
    if command == "analyze":
        from analysis import cli

        return cli.main(rest)
    print(f"unknown command {command!r}: valid commands are train, analyze\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
