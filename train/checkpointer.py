"""The one checkpointer: atomic, complete-or-absent checkpoints with everything needed to resume.

RUN_DIR/checkpoints/step_0000100/
    model/            save_pretrained output (safetensors + config.json): loads anywhere (under
                      finetune's model.lora: peft adapter files + the unmerged state instead)
    trainer.pt        optimizer, scheduler, RNG states, data position, step, counters: tensors and
                      plain Python values only, read back with torch.load(weights_only=True)
    COMPLETE          written last; a directory without it is not a checkpoint
A checkpoint is written into `step_N.tmp`, flushed to disk (fsync), marked complete, then renamed: a
run killed at any moment, or a machine that loses power, leaves either the previous checkpoints or
the new one, never a half-written one that looks done. A trainer.pt that holds anything but tensors
and plain data (a pickled object could run code on load) is refused with a message naming the file.
write_model_dir writes the model directories runs leave for users (RUN_DIR/model) the same way.
"""
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from biomamba.checkpoints import CheckpointError
from biomamba.io import fsync_tree, replace_dir, reporting_write_errors, write_text

MARKER = "COMPLETE"


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (numpy's as its MT19937 key array)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["cached_gaussian"]))
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

    def latest_step(self) -> int:
        """The step of the latest complete checkpoint, 0 if there is none (where a run resumes)."""
        latest = self.latest()
        return int((latest / MARKER).read_text()) if latest else 0

    def save(self, step: int, model, trainer_state: dict, weights: dict | None = None) -> Path:
        """`weights`: the whole model's state dict when the module holds only a shard (FSDP)."""
        final = self.root / f"step_{step:07d}"
        tmp = self.root / f"step_{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with reporting_write_errors(f"checkpoint {final}", self.describe_safe):
                (tmp / "model").mkdir(parents=True)
                model.save_pretrained(tmp / "model", state_dict=weights)
                with open(tmp / "trainer.pt", "wb") as f:  # a file object: a failed write keeps its OSError
                    torch.save({**trainer_state, "step": step, "rng": rng_state()}, f)
                fsync_tree(tmp)  # every file on disk before the marker says the checkpoint is complete
                write_text(tmp / MARKER, f"{step}\n")
                replace_dir(tmp, final)  # a rerun reaching a step that was saved before: replace it whole
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back; sweep() catches what a kill leaves
            raise
        self._prune()
        return final

    def describe_safe(self) -> str:
        """Which checkpoint a failed write left intact: what the user resumes from."""
        latest = self.latest()
        if latest is None:
            return f"no complete checkpoint in {self.root} yet: a rerun starts from step 0"
        return f"the latest complete checkpoint, {latest}, is intact: rerun the same command to resume from it"

    def sweep(self):
        """Remove what a killed or failed save left: step_N.tmp and step_N.trash directories (only the run
        directory's owner calls this, so no other process is writing them)."""
        if self.root.is_dir():
            for partial in [*self.root.glob("step_*.tmp"), *self.root.glob("step_*.trash")]:
                shutil.rmtree(partial, ignore_errors=True)

    def load(self, path: Path, mmap: bool = False) -> dict:
        """`mmap`: tensors stay in the file until read (for ranks that each keep only a shard)."""
        file = path / "trainer.pt"
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{file}: refused to load: it holds objects other than tensors and plain data, and "
                f"unpickling them could run code ({_unpickler_reason(error)}). Resume only from "
                "checkpoints written by this version of biomamba, or start a new run directory") from None

    def _prune(self):
        for stale in self.complete()[: -self.keep_last]:
            shutil.rmtree(stale)
        for partial in self.root.glob("step_*.tmp"):
            shutil.rmtree(partial, ignore_errors=True)


def write_model_dir(out: Path, model, tokenizer=None, weights: dict | None = None, extra: dict | None = None,
                    config_updates: dict | None = None):
    """A model directory users load (save_pretrained, the tokenizer, small JSON files `extra`), built
    in OUT.tmp and renamed in whole over OUT. `weights`: the whole state dict when `model` holds only
    an FSDP shard. `config_updates`: keys added to the saved config.json (the model's own config is left
    as it is), which from_pretrained then gives back as config attributes."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=weights)
    if config_updates:
        saved = tmp / "config.json"
        saved.write_text(json.dumps({**json.loads(saved.read_text()), **config_updates}, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, obj in (extra or {}).items():
        (tmp / name).write_text(json.dumps(obj) + "\n")
    fsync_tree(tmp)
    replace_dir(tmp, out)


def _unpickler_reason(error) -> str:
    """The line of torch's weights_only error that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if "Unsupported" in line or "Unpickler" in line]
    return lines[0] if lines else "not a weights-only file"
