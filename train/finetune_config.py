"""The fine-tuning config: task, model, data options + the shared optim/train/logging sections.

The same config (and so the same budget: steps, batch size, schedule) is used for every model
compared; only --model changes. Loaded with train.config.load_config(schema=FinetuneConfig,
check=check_finetune), so unknown keys and bad values are all reported at once.
"""
from dataclasses import dataclass, field

from biomamba.config import SCAN_BACKENDS
from biomamba.train.config import (LOOP_CHOICES, LoggingConfig, OptimConfig, TrainConfig, check_choices,
                          check_loop)


@dataclass
class FinetuneModelConfig:
    path: str | None = None  # --model: a BioMamba/Mamba checkpoint dir or any BERT-family dir
    pooling: str = "last"  # BioMamba: last real token (an EOS is appended) | mean over real tokens
    scan_backend: str = "auto"
    tokenizer: str | None = None  # default: the model dir's tokenizer, else data.dir/tokenizer
    lora: bool = False  # frozen backbone + LoRA adapters + trained head (peft: pip install 'biomamba[lora]')
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=list)  # [] = a default per architecture


@dataclass
class FinetuneDataConfig:
    dir: str | None = None  # a `biomamba prepare` directory (sentence-roles, publication-types)
    max_length: int = 128  # tokens per example, special tokens included; longer inputs are truncated
    max_train_examples: int | None = None  # a fixed random subset (the same for every seed and model)
    max_eval_examples: int | None = None  # cap on val and on test, each
    subset_seed: int = 0
    val_fraction: float = 0.1  # files without a split column: split by a hash of the example id
    test_fraction: float = 0.1
    text_field: str = "text"  # csv / jsonl / hf columns
    text_pair_field: str = "text_pair"
    label_field: str = "label"
    id_field: str = "id"  # the key hashed for the split (the text when the column is absent)
    eval_batch_size: int = 64


@dataclass
class FinetuneOptimConfig(OptimConfig):
    """Fine-tuning defaults: a short warmup, decay to 0, AdamW's usual beta2 and weight decay."""
    lr: float = 3e-4
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    beta2: float = 0.999
    warmup_steps: int = 10


@dataclass
class FinetuneTrainConfig(TrainConfig):
    max_steps: int = 200
    batch_size: int = 16
    save_every: int = 100
    keep_last: int = 1
    eval_every: int = 50


@dataclass
class FinetuneLoggingConfig(LoggingConfig):
    tags: list[str] = field(default_factory=lambda: ["finetune"])


@dataclass
class FinetuneConfig:
    task: str | None = None  # --task
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    logging: FinetuneLoggingConfig = field(default_factory=FinetuneLoggingConfig)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])


CHOICES = {
    "model.pooling": ("last", "mean"),
    "model.scan_backend": SCAN_BACKENDS,
    **LOOP_CHOICES,
}


def check_finetune(cfg: FinetuneConfig, problems: list):
    check_choices(cfg, CHOICES, problems)
    d = cfg.data
    check_loop(cfg.train, cfg.optim, problems)
    if d.max_length < 4:
        problems.append(f"data.max_length must be >= 4, got {d.max_length}")
    for name in ("max_train_examples", "max_eval_examples"):
        if getattr(d, name) is not None and getattr(d, name) < 1:
            problems.append(f"data.{name} must be >= 1 (or null for all), got {getattr(d, name)}")
    if not (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
        problems.append(f"need 0 <= data.val_fraction, data.test_fraction and their sum < 1; "
                        f"got {d.val_fraction}, {d.test_fraction}")
    if d.eval_batch_size < 1:
        problems.append(f"data.eval_batch_size must be >= 1, got {d.eval_batch_size}")
    if not cfg.seeds:
        problems.append("seeds must list at least one seed")
    elif len(set(cfg.seeds)) != len(cfg.seeds):
        problems.append(f"seeds must be distinct, got {cfg.seeds}")
    if cfg.model.lora_r < 1:
        problems.append(f"model.lora_r must be >= 1, got {cfg.model.lora_r}")
    if not 0 <= cfg.model.lora_dropout < 1:
        problems.append(f"model.lora_dropout must be in [0, 1), got {cfg.model.lora_dropout}")
