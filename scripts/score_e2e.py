"""Score E2E system outputs with the official E2E NLG metrics.

    python scripts/score_e2e.py predictions.txt ../shared/data/e2e/lora_format/test.txt
    python scripts/score_e2e.py predictions.txt ../shared/data/e2e/devset.csv --json scores.json

One output per line, in the order the references' MRs first appear (a lora_format `MR||ref` file
or an official `mr,ref` CSV). Prints BLEU, NIST, METEOR, ROUGE-L and CIDEr; needs `java`.
"""
import argparse
import json
import sys
from pathlib import Path

from lora_repro.metrics.nlg import read_references, score


def read_hypotheses(path: Path) -> list[str]:
    """One output per line, stripped, as the official scorer reads a plain system file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hypotheses", type=Path, help="system outputs, one per line")
    parser.add_argument("references", type=Path, help="lora_format .txt or E2E .csv references")
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    references = read_references(args.references)
    hypotheses = read_hypotheses(args.hypotheses)
    if len(hypotheses) != len(references.mrs):
        parser.error(f"{args.hypotheses} has {len(hypotheses)} lines but {args.references} "
                     f"has {len(references.mrs)} distinct MRs")
    scores = score(hypotheses, references.references)

    print("  ".join(f"{name.upper()} {value:.4f}" for name, value in scores.items()))
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
