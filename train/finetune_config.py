"""The fine-tuning config: task, model, data options + the shared optim/train/logging sections.

The same config (and so the same budget: steps, batch size, schedule) is used for every model
compared; only --model changes. Loaded with train.config.load_config(schema=FinetuneConfig,
check=check_finetune), so unknown keys and bad values are all reported at once.
"""
from dataclasses import dataclass, field

from biomamba.config import SCAN_BACKENDS
from biomamba.train.config import (LoggingConfig, OptimConfig, RuntimeConfig, TrainConfig, at_least, check_loop,
                                   choice)


OBJECTIVES = ("classification", "causal-lm")


@dataclass
class FinetuneModelConfig:
    path: str | None = None  # --model: a BioMamba/Mamba checkpoint dir or any BERT-family dir
    pooling: str = choice("last", ("last", "mean"))  # BioMamba: the last real token (an EOS is appended)
    scan_backend: str = choice("auto", SCAN_BACKENDS)
    tokenizer: str | None = None  # default: the model dir's tokenizer, else data.dir/tokenizer
    # random: the model dir's architecture and config with fresh weights drawn from each seed, the
    # control that shows what its pretraining adds (same shape, tokenizer and budget)
    init: str = choice("pretrained", ("pretrained", "random"))
    # token tasks (ner, pico): a second BioMamba backbone reads right to left (biomamba/token_classification.py)
    bidirectional: bool = False
    bidirectional_merge: str = choice("concat", ("concat", "sum"))
    lora: bool = False  # frozen backbone + LoRA adapters + trained head (peft: pip install 'biomamba[lora]')
    lora_r: int = at_least(8, 1)
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=list)  # [] = a default per architecture


@dataclass
class FinetuneDataConfig:
    dir: str | None = None  # a `biomamba prepare` directory (sentence-roles, publication-types)
    max_length: int = at_least(128, 4)  # tokens per example, special tokens included; longer: truncated
    #                                      (causal-lm: on the left, as eval-qa truncates a prompt)
    max_train_examples: int | None = at_least(None, 1)  # the examples whose (subset_seed, id) hash is lowest:
    max_eval_examples: int | None = at_least(None, 1)  # the same subset for every seed and model; val, test each
    subset_seed: int = 0
    val_fraction: float = 0.1  # files without a split column: split by a hash of the example id
    test_fraction: float = 0.1
    text_field: str = "text"  # csv / jsonl / hf columns
    text_pair_field: str = "text_pair"
    label_field: str = "label"
    id_field: str = "id"  # the key hashed for the split (the text when the column is absent)
    eval_batch_size: int = at_least(64, 1)


@dataclass
class FinetuneConfig:
    task: str | None = None  # --task
    # --objective: classification (a fresh head over the labels) or causal-lm (instruction fine-tuning of
    # the LM itself on prompt + answer, the loss on the answer tokens only: train/finetune_causal_lm.py)
    objective: str = choice("classification", OBJECTIVES)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    # fine-tuning defaults: a short warmup, decay to 0, AdamW's usual beta2 and weight decay
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=3e-4, min_lr_ratio=0.0, weight_decay=0.01, beta2=0.999, warmup_steps=10))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200, batch_size=16, save_every=100, keep_last=1, eval_every=50))
    run: RuntimeConfig = field(default_factory=RuntimeConfig)
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(tags=["finetune"]))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])


def check_finetune(cfg: FinetuneConfig, problems: list):
    d = cfg.data
    check_loop(cfg.train, cfg.optim, problems)
    if not (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
        problems.append(f"need 0 <= data.val_fraction, data.test_fraction and their sum < 1; "
                        f"got {d.val_fraction}, {d.test_fraction}")
    if not cfg.seeds:
        problems.append("seeds must list at least one seed")
    elif len(set(cfg.seeds)) != len(cfg.seeds):
        problems.append(f"seeds must be distinct, got {cfg.seeds}")
    if not 0 <= cfg.model.lora_dropout < 1:
        problems.append(f"model.lora_dropout must be in [0, 1), got {cfg.model.lora_dropout}")
