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

from lora_repro import methods  # noqa: E402
from lora_repro.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint  # noqa: E402
from lora_repro.config import resolve  # noqa: E402
from lora_repro.records import (  # noqa: E402
    GENERATIONS_FILE,
    PREDICTIONS_FILE,
    adopt_twin,
    atomic_write_json,
    new_record,
    read_record,
    write_record,
)
from lora_repro.tasks import epoch_batches, make_job  # noqa: E402
from lora_repro.tracking import Tracker  # noqa: E402

datasets.disable_progress_bars()  # our own bar covers training; tokenizing is quick
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class NaNLossError(FloatingPointError):
    pass


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


def init_source_dir(run: dict) -> Path | None:
    """The finished run this one starts from (None: the pretrained model). A task source (the
    paper's MNLI stage) must be done: anything else is an error, never a silent pretrained start."""
    source = run.get("init_from")
    if not source:
        return None
    source_dir = Path(source["run_dir"])
    if source["task"] is None:
        return source_dir
    record = read_record(source_dir) or adopt_twin(source_dir)
    status = record.get("status") if record else "missing"
    if status != "done":
        raise ValueError(
            f"init_from={source['task']}: the {source['task']} run {source['run_id']} of {run['model']}/"
            f"{run['method']['name']}/seed {run['seed']} is {status} ({source_dir}); run it first: "
            f"the same command with task={source['task']} (a sweep runs it in its first stage)")
    return source_dir


def build(run: dict, job, source_dir: Path | None):
    """The task's model with the method applied (and started from `source_dir` if given)."""
    method = methods.get(run["method"]["name"])
    cfg = method.config(**run["method"])
    torch.manual_seed(run["seed"])
    model = job.build_model()
    head = job.head_modules(model)
    model = method.apply(model, cfg, head_modules=head, seed=run["seed"])
    loaded = None
    if source_dir is not None:
        if method.start_from is None:
            raise ValueError(f"init_from is not supported for method={method.name!r}")
        loaded = method.start_from(model, source_dir, fresh_modules=["classifier"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    parameters = {"trainable": trainable, "total": total, "method": method.count(model, cfg)}
    if method.name == "lora":
        parameters["lora"] = parameters["method"]
    return model, method, cfg, parameters, loaded


def make_optimizer(model, method, method_cfg, cfg: dict, n_train: int, n_processes: int):
    """AdamW over the method's parameter groups and the learning-rate schedule; returns
    (optimizer, scheduler, batches per epoch)."""
    from transformers import get_scheduler

    batches_per_epoch = math.ceil(n_train / cfg["batch_size"])
    if not any(p.requires_grad for p in model.parameters()):  # a control that trains nothing
        return None, None, batches_per_epoch
    if method.param_groups is not None:
        groups = method.param_groups(model, method_cfg, cfg["lr"], cfg["weight_decay"])
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if n_processes > 1:  # each process takes every n-th batch (equal counts)
        batches_per_epoch //= n_processes
    steps_per_epoch = math.ceil(batches_per_epoch / cfg["grad_accum"])
    total_steps = cfg.get("max_steps") or steps_per_epoch * cfg["epochs"]
    warmup = cfg["warmup_steps"] or int(cfg["warmup_ratio"] * total_steps)
    schedule = "constant_with_warmup" if cfg["lr_schedule"] == "constant" else cfg["lr_schedule"]
    return optimizer, get_scheduler(schedule, optimizer, warmup, total_steps), batches_per_epoch


def train_epoch(ctx: dict, epoch: int, progress: dict) -> None:
    """One epoch (or what is left of it after a resume), checkpointing every few steps."""
    run, cfg, job, accelerator = ctx["run"], ctx["cfg"], ctx["job"], ctx["accelerator"]
    model, optimizer, scheduler = ctx["model"], ctx["optimizer"], ctx["scheduler"]
    n = accelerator.num_processes
    batches = epoch_batches(job.train_lengths, cfg["batch_size"], run["seed"], epoch)
    batches = batches[accelerator.process_index:ctx["batches_per_epoch"] * n:n]
    bar = tqdm(total=len(batches), initial=progress["batch"],
               disable=not (cfg["progress"] and accelerator.is_main_process),
               desc=f"{run['run_id']} epoch {epoch + 1}/{cfg['epochs']}", leave=False)
    if progress["batch"] == 0:  # a resumed epoch keeps the loss sum of its first part
        progress.update(loss_sum=0.0, loss_batches=0)
    epoch_start = time.time()
    for index in range(progress["batch"], len(batches)):
        rows = [job.train_set[i] for i in batches[index]]
        batch = {k: v.to(accelerator.device) for k, v in job.collate(rows).items()}
        with accelerator.accumulate(model):
            with ctx["autocast"]():
                loss = job.loss(model, batch)
            if not torch.isfinite(loss):
                raise NaNLossError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {index + 1}: "
                                   f"lower train.lr (now {cfg['lr']}) or use train.precision=fp32")
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
                _save(accelerator, ctx["run_dir"], model, optimizer, scheduler, progress)
        if cfg.get("max_steps") and progress["step"] >= cfg["max_steps"]:
            break
    bar.close()
    progress["train_time"] += time.time() - epoch_start


def run_epochs(ctx: dict, record: dict, progress: dict, save_record, tracker) -> None:
    """Train and evaluate epoch by epoch; the best epoch's trained weights are kept."""
    cfg, accelerator, model = ctx["cfg"], ctx["accelerator"], ctx["model"]
    if ctx["optimizer"] is None:  # nothing trains (zero_shot): evaluate the model once, as epoch 0
        entry = {"epoch": 0, **ctx["job"].evaluate(model, accelerator, ctx["autocast"])}
        record.update(epochs=[entry], best_epoch=0, best=entry)
        ctx["method"].save(accelerator.unwrap_model(model), ctx["run_dir"])
        save_record()
        return
    best = max(record["epochs"], key=lambda e: e["primary"]) if record["epochs"] else None
    model.train()
    for epoch in range(progress["epoch"], cfg["epochs"]):
        train_epoch(ctx, epoch, progress)
        metrics = ctx["job"].evaluate(model, accelerator, ctx["autocast"])
        entry = {"epoch": epoch + 1,
                 "train_loss": progress["loss_sum"] / max(progress["loss_batches"], 1), **metrics}
        record["epochs"].append(entry)
        tracker.log({f"eval/{k}": v for k, v in entry.items()}, step=progress["step"])
        if best is None or entry["primary"] > best["primary"]:
            best = entry
            if accelerator.is_main_process:
                ctx["method"].save(accelerator.unwrap_model(model), ctx["run_dir"])
                if getattr(ctx["job"], "predictions", None):  # the best epoch's dev predictions
                    atomic_write_json(Path(ctx["run_dir"]) / PREDICTIONS_FILE,
                                      {"epoch": epoch + 1, "splits": ctx["job"].predictions})
        accelerator.print(f"[lora-repro] {ctx['run']['run_id']} epoch {epoch + 1}: "
                          + ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float)))
        progress.update(epoch=epoch + 1, batch=0, epochs=record["epochs"])
        _save(accelerator, ctx["run_dir"], model, ctx["optimizer"], ctx["scheduler"], progress)
        record.update(best_epoch=best["epoch"], best=best)
        save_record()
        if cfg.get("max_steps") and progress["step"] >= cfg["max_steps"]:
            break


def train(run: dict) -> dict:
    """Run (or resume, or skip) one resolved run; returns its final record."""
    run_dir = Path(run["run_dir"])
    existing = read_record(run_dir)
    if not existing and not run["force"]:
        existing = adopt_twin(run_dir)
    if existing and existing.get("status") == "done" and not run["force"]:
        print(f"[lora-repro] {run['run_id']} already done: {_summary(existing)} ({run_dir})")
        return existing
    source_dir = init_source_dir(run)  # a missing source stops here: no record
    cfg = run["train"]
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))

    # Under torchrun / accelerate launch one process per GPU runs this; only the main one writes.
    accelerator = _accelerator(cfg["precision"], cfg["grad_accum"])
    main_process = accelerator.is_main_process
    record = new_record(run)
    save_record = (lambda: write_record(run_dir, record)) if main_process else (lambda: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_record()
    tracker = Tracker(run["logger"] if main_process else {"name": "none"}, record, run_dir)
    started = time.time()
    try:
        job = make_job(run)
        model, method, method_cfg, record["parameters"], loaded = build(run, job, source_dir)
        if loaded:
            record["init_from"] = {**run["init_from"], "loaded": loaded}
        optimizer, scheduler, batches_per_epoch = make_optimizer(
            model, method, method_cfg, cfg, len(job.train_lengths), accelerator.num_processes)
        if optimizer is None:
            model, progress = accelerator.prepare(model), None
        else:
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
        ctx = {"run": run, "cfg": cfg, "job": job, "accelerator": accelerator, "model": model,
               "optimizer": optimizer, "scheduler": scheduler, "method": method, "run_dir": run_dir,
               "batches_per_epoch": batches_per_epoch, "autocast": _autocast(cfg["precision"], accelerator.device)}
        run_epochs(ctx, record, progress, save_record, tracker)
        if job.kind == "nlg":  # decode with the best epoch's weights and score
            unwrapped = accelerator.unwrap_model(model)
            method.load(unwrapped, run_dir)
            record["generation"] = job.final_evaluate(unwrapped, ctx["autocast"])
            if accelerator.is_main_process:  # every output, to read beside the scores
                atomic_write_json(run_dir / GENERATIONS_FILE, {"split": job.eval_split, "items": job.outputs})
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
def hydra_main(cfg: DictConfig) -> None:
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


def main() -> None:
    """`python -m lora_repro.train ...` (torchrun too): the same checks as `lora-repro train`."""
    from lora_repro.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
