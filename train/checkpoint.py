"""The one checkpointer: atomic, complete-or-absent checkpoints with everything needed to resume.

RUN_DIR/checkpoints/step_0000100/
    model/            save_pretrained output (safetensors + config.json): loads anywhere (under
                      finetune's model.lora: peft adapter files + the unmerged state instead)
    trainer.pt        optimizer, scheduler, RNG states, data position, step, counters
    COMPLETE          written last; a directory without it is not a checkpoint
A checkpoint is written into `step_N.tmp`, completed, then renamed: a run killed at any moment
leaves either the previous checkpoints or the new one, never a half-written one that looks done.
write_model_dir writes the model directories runs leave for users (RUN_DIR/model) the same way.
"""
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from biomamba.io import replace_dir

MARKER = "COMPLETE"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    def __init__(self, run_dir, keep_last=2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob("step_*") if p.is_dir() and (p / MARKER).is_file()
                 and not p.name.endswith(".tmp")]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, model, trainer_state: dict, weights: dict | None = None) -> Path:
        """`weights`: the whole model's state dict when the module holds only a shard (FSDP)."""
        final = self.root / f"step_{step:07d}"
        tmp = self.root / f"step_{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "model").mkdir(parents=True)
        model.save_pretrained(tmp / "model", state_dict=weights)
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / "trainer.pt")
        (tmp / MARKER).write_text(f"{step}\n")
        replace_dir(tmp, final)  # a rerun reaching a step that was saved before: replace it whole
        self._prune()
        return final

    def load(self, path: Path, mmap: bool = False) -> dict:
        """`mmap`: tensors stay in the file until read (for ranks that each keep only a shard)."""
        return torch.load(path / "trainer.pt", map_location="cpu", weights_only=False, mmap=mmap)

    def _prune(self):
        for stale in self.complete()[: -self.keep_last]:
            shutil.rmtree(stale)
        for partial in self.root.glob("step_*.tmp"):
            shutil.rmtree(partial, ignore_errors=True)


def write_model_dir(out: Path, model, tokenizer=None, weights: dict | None = None, extra: dict | None = None):
    """A model directory users load (save_pretrained, the tokenizer, small JSON files `extra`), built
    in OUT.tmp and renamed in whole over OUT. `weights`: the whole state dict when `model` holds only
    an FSDP shard."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, obj in (extra or {}).items():
        (tmp / name).write_text(json.dumps(obj) + "\n")
    replace_dir(tmp, out)
