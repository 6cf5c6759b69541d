"""The one logger: RUN_DIR/metrics.jsonl first, W&B on top, a progress bar; rank 0 only.

metrics.jsonl holds one JSON object per optimizer step ({"step", "loss", "lr", "grad_norm",
"tokens_seen", "tokens_per_s", ...}) and one per validation ({"step", "split": "val", ...}).
W&B gets the same numbers under `{prefix}/{name}` (train/loss, val/ppl, ...), the full config, and
a table of sample generations. W&B runs offline unless the user has configured it (WANDB_API_KEY,
`wandb login`) or asks for logging.mode=online; `logging.wandb=false` turns it off.
"""
import json
import os
import uuid
from pathlib import Path

from tqdm.auto import tqdm

from biomamba.io import write_text


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class RunLogger:
    def __init__(self, run_dir, config: dict, logging_cfg, total_steps: int, start_step: int = 0,
                 enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.wandb_run = None
        self.samples = []
        if not enabled:
            return
        self._truncate_after(start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                        dynamic_ncols=True, disable=None)
        if logging_cfg.wandb:
            self.wandb_run = self._start_wandb(config, logging_cfg)

    def _truncate_after(self, step: int):
        """On resume, drop rows logged after the checkpoint so the log equals a straight run's."""
        if not self.metrics_path.is_file():
            return
        keep = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        write_text(self.metrics_path, "".join(line + "\n" for line in keep))

    def _start_wandb(self, config, cfg):
        import wandb

        mode = cfg.mode if cfg.mode != "auto" else ("online" if _wandb_configured() else "offline")
        id_file = self.run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        write_text(id_file, run_id + "\n")
        return wandb.init(project=cfg.project, name=cfg.name or self.run_dir.name, group=cfg.group,
                          tags=list(cfg.tags), config=config, dir=str(self.run_dir), mode=mode,
                          id=run_id, resume="allow")

    def log(self, row: dict, prefix: str):
        """Append `row` (must hold "step") to metrics.jsonl and send it to W&B as prefix/name."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({f"{prefix}/{k}": v for k, v in row.items() if k not in ("step", "split")},
                               step=row["step"])

    def advance(self, step: int, loss: float):
        if self.enabled:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.refresh()

    def log_samples(self, step: int, samples: list[tuple[str, str]]):
        """Sample generations (prompt, continuation) at a validation: a W&B table and the log."""
        if not self.enabled or not samples:
            return
        self.samples += [(step, prompt, text) for prompt, text in samples]
        with (self.run_dir / "samples.jsonl").open("a") as f:
            for prompt, text in samples:
                f.write(json.dumps({"step": step, "prompt": prompt, "generation": text}) + "\n")
        if self.wandb_run is not None:
            import wandb
            table = wandb.Table(columns=["step", "prompt", "generation"], data=[list(s) for s in self.samples])
            self.wandb_run.log({"val/samples": table}, step=step)

    def summarize(self, results: dict):
        """A run's results as the W&B run summary: every number, named by its path (test/macro_f1)."""
        if self.wandb_run is not None:
            for key, value in flatten_numbers(results).items():
                self.wandb_run.summary[key] = value

    def write(self, message: str):
        if self.enabled:
            tqdm.write(message)

    def close(self):
        if not self.enabled:
            return
        self.bar.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def flatten_numbers(tree: dict, prefix: str = "") -> dict:
    """{"test": {"macro_f1": 0.5}} -> {"test/macro_f1": 0.5}; strings, lists and None are left out."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat
