"""Several training processes from inside a DVC stage: one per GPU, rank 0 writes, the stage evaluates.

``training.processes: auto`` launches one process per visible GPU when there are several (a number forces it;
1 trains in-process). The stage writes the exact training config beside its output, runs
``torch.distributed.run --standalone -m stm.training.launch <spec>``, waits, and reads rank 0's record; it then
evaluates in its own process, so the 12-task evaluation runs once, not once per rank. Run by hand under
``torchrun`` (``WORLD_SIZE`` set), a stage trains in the processes it was given and launches nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from stm.config import ConfigError, TrainingConfig, dump, validate
from stm.core.records import TrainingRecord
from stm.io import read_json, write_json
from stm.training.train import train


def processes(cfg: TrainingConfig) -> int:
    """How many training processes this stage runs (1 inside a process group that is already launched)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    if cfg.processes == "auto":
        return max(1, torch.cuda.device_count())
    return cfg.processes


def train_launched(cfg: TrainingConfig, expert: str, out: Path, n: int, processed: Path,
                   prompts: Path | None = None) -> TrainingRecord:
    """Train with ``n`` processes under ``torch.distributed.run``; returns rank 0's training record."""
    if cfg.batch_size % n:  # checked once, before any process starts
        raise ConfigError(f"training.batch_size: {cfg.batch_size} is not divisible by the {n} training processes "
                          "(training.processes, or the visible GPUs); change one of them")
    out = Path(out)
    spec = out.parent / f".{out.name}-launch.json"  # beside the DVC output, which DVC deletes before a rerun
    write_json(spec, {"config": dump(cfg), "expert": expert, "out": str(out),
                      "processed": str(processed), "prompts": str(prompts) if prompts is not None else None})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "stm.training.launch", str(spec)]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"training {expert!r} with {n} processes failed (exit {proc.returncode}): {' '.join(cmd)}")
    spec.unlink()
    return TrainingRecord.load(TrainingRecord.path(out))


def main(argv: list[str]) -> None:
    spec = read_json(Path(argv[1]))
    cfg = validate("training", spec["config"], source=argv[1])
    prompts = Path(spec["prompts"]) if spec["prompts"] is not None else None
    train(cfg, spec["expert"], Path(spec["out"]), Path(spec["processed"]), prompts=prompts)


if __name__ == "__main__":
    main(sys.argv)
