"""Train one (model, task, method, targets, rank, seed) and write its record.

    lora-repro train model=minilm_l6 task=sst2 method=lora method.targets=[q,v] method.rank=8 seed=0
    python -m lora_repro.train model=tiny_bert task=sst2 tier=quick logger=none
    lora-repro train -m method.rank=1,2,4,8 seed=0,1          # a Hydra multirun sweep

The run lands in results/runs/<experiment>/<run_id>/: record.json (status, config, metrics per
epoch, best epoch, cost), adapter.safetensors (LoRA runs: the best epoch's factors + head) and,
while it runs, checkpoint.safetensors. Asked again, a finished run is skipped and an interrupted
one resumes from its last checkpoint. Several GPUs (DDP): `torchrun --nproc_per_node N -m lora_repro.train ...`.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP stalls shared CPUs

import datasets  # noqa: E402
import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from lora_repro import lora  # noqa: E402
from lora_repro.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint  # noqa: E402
from lora_repro.config import resolve  # noqa: E402
from lora_repro.records import (  # noqa: E402
    adopt_twin,
    device_info,
    git_commit,
    library_versions,
    read_record,
    write_record,
)
from lora_repro.tasks import epoch_batches, make_job  # noqa: E402
from lora_repro.tracking import Tracker  # noqa: E402

datasets.disable_progress_bars()  # our own bar covers training; tokenizing is quick
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class NaNLossError(FloatingPointError):
    pass


def _start_record(run: dict) -> dict:
    method = run["method"]
    return {
        "run_id": run["run_id"],
        "experiment": run["experiment"],
        "run_dir": run["run_dir"],
        "status": "running",
        "error": None,
        "model": run["model"],
        "task": run["task"],
        "method": method["name"],
        "targets": method.get("targets"),
        "rank": method.get("rank"),
        "ranks": method.get("ranks"),
        "alpha": method.get("alpha"),
        "seed": run["seed"],
        "tier": run["tier"],
        "preset": run["preset"],
        "hyperparameters": run["train"],
        "config": run["config"],
        "epochs": [],
        "best_epoch": None,
        "best": None,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "device": device_info(),
    }


def _autocast(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type=device.type, dtype=dtype)
    return nullcontext


def _accelerator(precision: str, grad_accum: int):
    from accelerate import Accelerator

    if torch.cuda.is_available():
        return Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision),
                           gradient_accumulation_steps=grad_accum)
    # On CPU we autocast ourselves (accelerate leaves CPU bf16 in fp32).
    return Accelerator(cpu=True, gradient_accumulation_steps=grad_accum)


def _init_from(model, source: str) -> None:
    """Start from another run's LoRA factors (the paper starts MRPC, RTE, STS-B from MNLI)."""
    path = Path(source)
    read = lora.read_factors(path)
    ours = {(w.layer_index, t): w for w in lora.wrappers(model).values() for t in w.lora_A}
    with torch.no_grad():
        for (layer, target), (A, B, _) in read.items():
            wrapper = ours.get((layer, target))
            if wrapper is None or wrapper.lora_A[target].shape != A.shape:
                raise ValueError(
                    f"init_from {source}: its factor ({layer}, {target}) of shape {tuple(A.shape)} "
                    f"has no match in this run's adapter (targets {lora.spec_of(model).targets}, "
                    f"ranks {lora.spec_of(model).ranks})"
                )
            wrapper.lora_A[target].copy_(A)
            wrapper.lora_B[target].copy_(B)


def train(run: dict) -> dict:
    """Run (or resume, or skip) one resolved run; returns its final record."""
    run_dir = Path(run["run_dir"])
    existing = read_record(run_dir)
    if not existing and not run["force"]:
        existing = adopt_twin(run_dir)
    if existing and existing.get("status") == "done" and not run["force"]:
        print(f"[lora-repro] {run['run_id']} already done: {_summary(existing)} ({run_dir})")
        return existing
    cfg = run["train"]
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))

    # Under torchrun / accelerate launch one process per GPU runs this; only the main one writes.
    accelerator = _accelerator(cfg["precision"], cfg["grad_accum"])
    main_process = accelerator.is_main_process
    record = _start_record(run)
    save_record = (lambda: write_record(run_dir, record)) if main_process else (lambda: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_record()
    tracker = Tracker(run["logger"] if main_process else {"name": "none"}, record, run_dir)
    started = time.time()
    try:
        job = make_job(run)
        torch.manual_seed(run["seed"])
        model = job.build_model()
        if run["method"]["name"] == "lora":
            m = run["method"]
            lora.inject(
                model, targets=m["targets"], rank=m["rank"], alpha=m["alpha"], dropout=m["dropout"],
                init=m.get("init", "gaussian"), ranks=m.get("ranks"), layers=m.get("layers"),
                sigma=m.get("sigma", 0.02), bias=m.get("bias", "none"),
                trainable_modules=job.head_modules(model), seed=run["seed"],
            )
            if run.get("init_from"):
                _init_from(model, run["init_from"])
        trainable, total = lora.count_trainable(model)
        record["parameters"] = {"trainable": trainable, "total": total}
        if run["method"]["name"] == "lora":
            record["parameters"]["lora"] = sum(
                A.numel() + B.numel() for A, B, _ in lora.factors(model).values()
            )

        autocast = _autocast(cfg["precision"], accelerator.device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        batches_per_epoch = math.ceil(len(job.train_lengths) / cfg["batch_size"])
        if accelerator.num_processes > 1:  # each process takes every n-th batch (equal counts)
            batches_per_epoch //= accelerator.num_processes
        steps_per_epoch = math.ceil(batches_per_epoch / cfg["grad_accum"])
        total_steps = cfg.get("max_steps") or steps_per_epoch * cfg["epochs"]
        warmup = cfg["warmup_steps"] or int(cfg["warmup_ratio"] * total_steps)
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg["lr_schedule"] if cfg["lr_schedule"] != "constant"
                                  else "constant_with_warmup", optimizer, warmup, total_steps)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

        progress = load_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        if progress:
            accelerator.print(f"[lora-repro] resuming {run['run_id']} at epoch {progress['epoch'] + 1}, "
                  f"batch {progress['batch']} of {batches_per_epoch}")
            progress["resumed"] = progress.get("resumed", 0) + 1
        progress = progress or {"epoch": 0, "batch": 0, "step": 0, "epochs": [],
                                "train_time": 0.0, "examples": 0, "tokens": 0}
        record["epochs"] = progress["epochs"]
        record["resumed"] = progress.get("resumed", 0)
        best = max(record["epochs"], key=lambda e: e["primary"]) if record["epochs"] else None

        model.train()
        for epoch in range(progress["epoch"], cfg["epochs"]):
            batches = epoch_batches(job.train_lengths, cfg["batch_size"], run["seed"], epoch)
            n = accelerator.num_processes
            batches = batches[accelerator.process_index:batches_per_epoch * n:n]
            bar = tqdm(total=len(batches), initial=progress["batch"], disable=not (cfg["progress"] and main_process),
                       desc=f"{run['run_id']} epoch {epoch + 1}/{cfg['epochs']}", leave=False)
            if progress["batch"] == 0:  # a resumed epoch keeps the loss sum of its first part
                progress.update(loss_sum=0.0, loss_batches=0)
            epoch_start = time.time()
            for index in range(progress["batch"], len(batches)):
                rows = [job.train_set[i] for i in batches[index]]
                batch = {k: v.to(accelerator.device) for k, v in job.collate(rows).items()}
                with accelerator.accumulate(model):
                    with autocast():
                        loss = job.loss(model, batch)
                    if not torch.isfinite(loss):
                        raise NaNLossError(
                            f"loss is {loss.item()} at epoch {epoch + 1}, batch {index + 1}: "
                            f"lower train.lr (now {cfg['lr']}) or use precision=fp32"
                        )
                    accelerator.backward(loss)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                progress["batch"] = index + 1
                progress["examples"] += len(rows)
                progress["tokens"] += int(batch["attention_mask"].sum())
                progress["loss_sum"] += loss.item()
                progress["loss_batches"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{progress['loss_sum'] / progress['loss_batches']:.4f}")
                if accelerator.sync_gradients:
                    progress["step"] += 1
                    if progress["step"] % cfg["checkpoint_every"] == 0:
                        progress["train_time"] += time.time() - epoch_start
                        epoch_start = time.time()
                        _save(accelerator, run_dir, model, optimizer, scheduler, progress)
                if cfg.get("max_steps") and progress["step"] >= cfg["max_steps"]:
                    break
            bar.close()
            progress["train_time"] += time.time() - epoch_start

            metrics = job.evaluate(model, accelerator, autocast)
            entry = {"epoch": epoch + 1,
                     "train_loss": progress["loss_sum"] / max(progress["loss_batches"], 1), **metrics}
            record["epochs"].append(entry)
            tracker.log({f"eval/{k}": v for k, v in entry.items()}, step=progress["step"])
            if best is None or entry["primary"] > best["primary"]:
                best = entry
                if run["method"]["name"] == "lora" and accelerator.is_main_process:
                    lora.save_adapter(accelerator.unwrap_model(model), run_dir)
            accelerator.print(f"[lora-repro] {run['run_id']} epoch {epoch + 1}: "
                  + ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float)))
            progress.update(epoch=epoch + 1, batch=0, epochs=record["epochs"])
            _save(accelerator, run_dir, model, optimizer, scheduler, progress)
            record.update(best_epoch=best["epoch"], best=best)
            save_record()
            if cfg.get("max_steps") and progress["step"] >= cfg["max_steps"]:
                break

        if job.kind == "nlg":  # decode with the best epoch's adapter and score it
            unwrapped = accelerator.unwrap_model(model)
            if run["method"]["name"] == "lora":
                lora.load_adapter(unwrapped, run_dir)
            record["generation"] = job.final_evaluate(unwrapped, autocast)
            record["best"] = {**record["best"], **{k: v for k, v in record["generation"].items()
                                                   if k != "samples"}}
        record.update(
            status="done",
            wall_time_s=time.time() - started,
            train_time_s=progress["train_time"],
            optimizer_steps=progress["step"],
            throughput={
                "examples_per_s": progress["examples"] / max(progress["train_time"], 1e-9),
                "tokens_per_s": progress["tokens"] / max(progress["train_time"], 1e-9),
            },
            peak_memory_mb=_peak_memory_mb(),
        )
        save_record()
        if main_process:
            remove_checkpoint(run_dir)
        tracker.summary({"best_epoch": record["best_epoch"],
                         **{f"best/{k}": v for k, v in record["best"].items() if isinstance(v, float)}})
        tracker.finish()
        accelerator.print(f"[lora-repro] done {run['run_id']}: {_summary(record)} "
                          f"in {record['wall_time_s']:.0f}s ({run_dir})")
        return record
    except BaseException as err:
        if isinstance(err, (SystemExit, KeyboardInterrupt)):  # preempted or stopped: it resumes
            record.update(status="interrupted", error=None, wall_time_s=time.time() - started)
        else:
            record.update(status="failed", error=f"{type(err).__name__}: {err}",
                          traceback=traceback.format_exc(limit=8), wall_time_s=time.time() - started)
        save_record()
        tracker.finish(failed=True)
        raise


def _save(accelerator, run_dir, model, optimizer, scheduler, progress) -> None:
    if accelerator.is_main_process:
        save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, progress)
    accelerator.wait_for_everyone()


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _summary(record: dict) -> str:
    best = record.get("best") or {}
    values = ", ".join(f"{k}={v:.4f}" for k, v in best.items() if isinstance(v, float) and k != "train_loss")
    return (f"{record['model']} {record['task']} {record['method']} targets={record.get('targets')} "
            f"r={record.get('rank')} seed={record['seed']} tier={record['tier']}: best epoch "
            f"{record.get('best_epoch')} {values}")


USER_ERRORS = (ValueError, FileNotFoundError, OSError, NaNLossError)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        train(resolve(cfg))
    except USER_ERRORS as err:
        # one clear line instead of a traceback; the record (if any) holds the trace
        print(f"[lora-repro] error: {err}", file=sys.stderr)
        if os.environ.get("LORA_REPRO_TRACEBACK") or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # in a sweep the launcher marks this job failed and the others go on
        sys.exit(1)


if __name__ == "__main__":
    main()
