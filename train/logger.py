"""The one logger: RUN_DIR/metrics.jsonl first, W&B on top, a progress bar; rank 0 only.

metrics.jsonl holds one JSON object per optimizer step ({"step", "loss", "lr", "grad_norm",
"tokens_seen", "tokens_per_s", ...}) and one per validation ({"step", "split": "val", ...}).
W&B (biomamba.tracking) gets the same numbers under `{prefix}/{name}` (train/loss, val/ppl, ...),
the full config, a table of sample generations and the results as the run summary. W&B runs offline
unless the user has configured it (WANDB_API_KEY, `wandb login`) or asks for logging.mode=online;
`logging.wandb=false` turns it off. The run's job_type names the command (pretrain, finetune,
retrieval-train); its group is logging.group, else the group of the model the run started from
(model.init_from, model.path), else the run directory's name. `identity` (project,
job_type, group, W&B id) is recorded in config.yaml (resolved.wandb), whence evaluations of the
run's model take their group.
"""
import json
from pathlib import Path

from tqdm.auto import tqdm

from biomamba.io import write_text
from biomamba.tracking import ModelOrigin, Tracker, group_for, start_run


class RunLogger:
    def __init__(self, run_dir, config: dict, logging_cfg, total_steps: int, start_step: int = 0,
                 enabled: bool = True, job_type: str = "train", origin: ModelOrigin | None = None):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.tracker = Tracker()
        self.samples = []
        # the W&B group ties the run to the model it started from (see biomamba.tracking)
        self.identity = {"project": logging_cfg.project, "job_type": job_type,
                         "group": group_for(logging_cfg.group, origin, self.run_dir.name),
                         "id": None}
        if not enabled:
            return
        self._truncate_after(start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                        dynamic_ncols=True, disable=None)
        if logging_cfg.wandb:
            self.tracker = start_run(job_type=job_type, name=logging_cfg.name or self.run_dir.name,
                                     directory=self.run_dir, project=logging_cfg.project,
                                     group=self.identity["group"], tags=logging_cfg.tags,
                                     config={**config, "model_origin": origin.facts() if origin else None},
                                     mode=logging_cfg.mode, keep_id=True)
            self.identity["id"] = self.tracker.id

    def _truncate_after(self, step: int):
        """On resume, drop rows logged after the checkpoint so the log equals a straight run's."""
        if not self.metrics_path.is_file():
            return
        keep = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        write_text(self.metrics_path, "".join(line + "\n" for line in keep))

    def log(self, row: dict, prefix: str):
        """Append `row` (must hold "step") to metrics.jsonl and send it to W&B as prefix/name."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.tracker.log({f"{prefix}/{k}": v for k, v in row.items() if k not in ("step", "split")},
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
        self.tracker.log_table("val/samples", ["step", "prompt", "generation"], self.samples, step=step)

    def summarize(self, results: dict):
        """A run's results as the W&B run summary: every number, named by its path (test/macro_f1)."""
        self.tracker.summarize(results)

    def write(self, message: str):
        if self.enabled:
            tqdm.write(message)

    def close(self):
        if not self.enabled:
            return
        self.bar.close()
        self.tracker.finish()

