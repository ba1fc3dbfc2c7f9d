"""Smoke test of scripts/bench_lora.py at a tiny size: the table has its rows and columns.

No timing is asserted: at this size the numbers are Python overhead and noise.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_lora.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lora", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


TINY = ["--batch", "2", "--seq", "8", "--steps", "1", "--warmup", "1", "--repeats", "2",
        "--threads", "1"]


def _check_result(bench, result, precisions):
    training = result["training"]
    assert [(r["variant"], r["precision"]) for r in training] == [
        (v, p) for p in precisions for v in bench.VARIANTS
    ]
    for row in training:
        for key in ("median_ms", "min_ms", "max_ms", "cpu_median_ms", "vs_peft", "vs_full",
                    "cpu_vs_peft", "cpu_vs_full", "trainable", "total"):
            assert key in row, key
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert len(row["rounds_ms"]) == 2
    by = {(r["variant"], r["precision"]): r for r in training}
    for p in precisions:
        assert by[("peft", p)]["vs_peft"] == pytest.approx(1.0)
        assert by[("full", p)]["vs_full"] == pytest.approx(1.0)

    params = result["params"]
    assert set(params) == set(bench.VARIANTS)
    # LoRA trains a small fraction; full fine-tuning trains every parameter
    assert 0 < params["ours"]["trainable"] < params["full"]["trainable"] // 10
    assert params["full"]["trainable"] == params["full"]["total"]

    inference = result["inference"]
    assert [(r["variant"], r["precision"]) for r in inference] == [
        (v, p) for p in precisions for v in bench.INFERENCE_VARIANTS
    ]
    for row in inference:
        assert row["median_ms"] > 0 and "vs_base" in row and "cpu_vs_base" in row

    checks = result["targets_check"]
    assert [(c["target"], c["precision"]) for c in checks] == [
        (t, p) for p in precisions for t in ("ours / PEFT step", "ours / full FT step")
    ] + [("merged / base inference", p) for p in precisions]
    assert all(isinstance(c["pass"], bool) for c in checks)

    report = bench.format_report(result)
    for word in ("trainable parameters", "training step", "inference forward", "targets",
                 "torch threads", "cpu_count"):
        assert word in report
    verdicts = [line.split()[0] for line in report.splitlines()
                if line.startswith(("  PASS ", "  MISS "))]
    assert len(verdicts) == len(checks)


def test_tiny_bert_fp32_bf16(bench):
    args = bench.parse_args(["--model", "tiny_bert", *TINY])
    result = bench.run(args, log=lambda s: None)
    _check_result(bench, result, ["fp32", "bf16"])
    # the same adapter size in both implementations: r (d_in + d_out) per q and v, + the head
    assert result["params"]["ours"]["trainable"] == result["params"]["peft"]["trainable"]


def test_tiny_gpt2_main_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "tiny_gpt2", "--precisions", "fp32", *TINY,
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PEFT adapts the whole fused c_attn" in printed
    result = json.loads(out.read_text())
    _check_result(bench, result, ["fp32"])
    assert result["head"] == "causal_lm"
    assert result["args"]["model"] == "tiny_gpt2"


def test_bad_arguments(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--precisions", "fp16"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="unknown model"):
        bench.build_base("no_such_model")
