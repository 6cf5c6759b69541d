"""The classifiers fine-tuning builds, their tokenizers and input encoding.

  BioMamba: any Mamba checkpoint dir (ours, HF MambaForCausalLM, state-spaces mamba_ssm, a
            pretraining RUN_DIR/model) -> BioMambaForSequenceClassification (fresh head). Input:
            text EOS [text_pair EOS]; "last" pooling reads the final EOS, which has seen everything.
  BERT family: any other dir (or a hub name, with the user's own network) ->
            AutoModelForSequenceClassification; input from its own tokenizer: [CLS] a [SEP] [b [SEP]].
Both are right padded to the longest example of a batch; padding is masked and never pooled.
Token kinds get BioMambaForTokenClassification / AutoModelForTokenClassification instead.
model.lora=true wraps any of them (every kind) in a LoraClassifier: peft LoRA adapters on the frozen
backbone, the head trained. A bidirectional token head's reverse backbone has the same module names, so
it gets adapters on the same projections as the forward one (both frozen, both adapted).
"""
import json
import warnings
from pathlib import Path

import torch

from biomamba.io import atomic_open
from biomamba.resolve import ModelSpecError, find_tokenizer_dir, load_tokenizer, local_model, model_family, read_config
from biomamba.train.checkpointer import write_model_dir
from biomamba.train.finetune_kinds import collate  # noqa: F401  (one collate for every task kind)

# BioMamba: the mixer's projections, per block type (config.ssm_layer); Mamba-2 computes dt, B and C in
# in_proj, so it has no x_proj. BERT: peft's own default (query, value).
LORA_TARGETS = {"biomamba": {"Mamba1": ["in_proj", "x_proj", "out_proj"], "Mamba2": ["in_proj", "out_proj"]}}
# The mixer reads these weights directly (scan, conv kernel), so an adapter on them would never run
# (Mamba-2's A_log, D and dt_bias are parameters, not modules: no adapter can name them).
LORA_IGNORED = {"biomamba": ["dt_proj", "conv1d"]}
# the head modules trained in full under LoRA: BioMamba's sequence and token heads are both `score`; a BERT's
# BertFor{Sequence,Token}Classification both `classifier`
HEADS = {"biomamba": ["score"], "bert": ["classifier"]}
SELECTED = "selected.json"  # in a save_selected model directory: {"step": N}, the step it was taken at
THRESHOLD = "multilabel_threshold"  # in a multi-label save_selected directory's config.json: the val-chosen one


def classifier_family(spec: str) -> str:
    """'biomamba' for Mamba checkpoints of any layout, else 'bert' (any AutoModel checkpoint)."""
    location = local_model(spec)
    if not isinstance(location, Path):
        return "bert"  # a hub name: transformers resolves it (needs the user's network)
    family, _ = model_family(read_config(location))
    return "biomamba" if family == "biomamba" else "bert"


def load_classifier_tokenizer(spec: str, family: str, cfg):
    """model.tokenizer, else the model dir's tokenizer; for BioMamba, else data.dir's tokenizer/."""
    location = local_model(spec)
    if not isinstance(location, Path) and not cfg.model.tokenizer:  # a hub name (the user's network)
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(spec)
    fallbacks = [Path(cfg.data.dir) / "tokenizer"] if family == "biomamba" and cfg.data.dir else []
    return load_tokenizer(find_tokenizer_dir(location, cfg.model.tokenizer, fallbacks,
                                             hint="set model.tokenizer=DIR or data.dir=PREPARED_DIR"))


def build_classifier(spec: str, family: str, labels: list[str], cfg, kind: str = "classification"):
    """A classifier with a freshly initialised head over `labels` (seed torch first); with
    model.init=random, its backbone too (same architecture and config, no pretrained weight).
    Token kinds (ner, pico) get a token head; similarity a 1-output regression head; multilabel a
    sigmoid per label (transformers' problem_type, for ours as for a BERT)."""
    from biomamba.train.finetune_kinds import PROBLEM_TYPES, TOKEN_KINDS
    check_head_options(family, kind, cfg.model)
    token = kind in TOKEN_KINDS
    problem_type = PROBLEM_TYPES.get(kind, "single_label_classification")
    n = 1 if kind == "similarity" else len(labels)
    id2label = dict(enumerate(labels[:n]))
    label2id = {name: i for i, name in id2label.items()}
    spec = local_model(spec)
    if family == "biomamba":
        from biomamba.modeling import BioMambaForSequenceClassification
        from biomamba.token_classification import BioMambaForTokenClassification
        head = ({"bidirectional": cfg.model.bidirectional, "bidirectional_merge": cfg.model.bidirectional_merge}
                if token else {"pooling": cfg.model.pooling, "problem_type": problem_type})
        model = (BioMambaForTokenClassification if token else BioMambaForSequenceClassification).from_pretrained(
            spec, num_labels=n, id2label=id2label, label2id=label2id, scan_backend=cfg.model.scan_backend, **head)
    else:
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        from biomamba.model_files import check_model_dir
        check_model_dir(spec)  # a local dir's truncated or corrupt files: one line naming the file
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        model = auto.from_pretrained(spec, num_labels=n, id2label=id2label, label2id=label2id,
                                     **({} if token else {"problem_type": problem_type}),
                                     ignore_mismatched_sizes=True)
    if cfg.model.init == "random":
        model = type(model)(model.config)  # every weight drawn afresh from torch's current (seeded) state
    model.train()
    return with_lora(model, family, cfg.model, token=token) if cfg.model.lora else model


def check_head_options(family: str, kind: str, model_cfg):
    """model.bidirectional is BioMamba's token head."""
    from biomamba.train.finetune_kinds import TOKEN_KINDS
    if model_cfg.bidirectional and (family != "biomamba" or kind not in TOKEN_KINDS):
        raise ModelSpecError(f"model.bidirectional=true is for BioMamba on token tasks (ner:, pico:, chemical-ner); "
                             f"this run is a {family} on a {kind} task")


def peft_task_type(peft, family: str, head: bool, token: bool):
    """peft's wrapper for the model: SEQ_CLS for a sequence head, TOKEN_CLS for a BERT's token head. None
    (peft's plain PeftModel, which passes the batch as given) for a causal LM and for BioMamba's token
    head, whose forward takes no inputs_embeds / output_attentions / output_hidden_states, which
    TOKEN_CLS's wrapper always passes."""
    if not head or (token and family == "biomamba"):
        return None
    return peft.TaskType.TOKEN_CLS if token else peft.TaskType.SEQ_CLS


def with_lora(model, family, model_cfg, head: bool = True, token: bool = False):
    """LoRA adapters on the frozen backbone (peft); the classifier head (HEADS) stays fully trainable.
    token: a token head (ner, pico). head=False: a causal LM (finetune --objective causal-lm), nothing but
    the adapters trained."""
    try:
        import peft
    except ImportError:
        raise ModelSpecError("model.lora=true needs peft: pip install 'biomamba[lora]' (or pip install peft)") from None
    defaults = default_lora_targets(model, family)
    targets = model_cfg.lora_target_modules or defaults
    ignored = sorted(set(targets or ()) & set(LORA_IGNORED.get(family, ())))
    if ignored:
        raise ModelSpecError(f"model.lora_target_modules: {', '.join(ignored)} cannot take LoRA in a BioMamba "
                             f"(their weights are read directly, an adapter would never run); use {defaults}")
    config = peft.LoraConfig(task_type=peft_task_type(peft, family, head, token), r=model_cfg.lora_r,
                             lora_alpha=model_cfg.lora_alpha, lora_dropout=model_cfg.lora_dropout,
                             target_modules=targets, modules_to_save=HEADS[family] if head else None)
    with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = peft.get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = model_cfg.path  # ours do not record it
    return LoraClassifier(peft_model)


def default_lora_targets(model, family) -> list[str] | None:
    """LORA_TARGETS for the model's family (and BioMamba's block type); None: peft's default."""
    if family != "biomamba":
        return LORA_TARGETS.get(family)
    return LORA_TARGETS[family][model.config.ssm_layer]


class LoraClassifier(torch.nn.Module):
    """A peft LoRA classifier as the shared loop and Checkpointer see it.

    A checkpoint's model/ (save_pretrained) holds peft's adapter files (adapter_config.json,
    adapter_model.safetensors: PeftModel.from_pretrained(base, dir) loads them) and model.safetensors,
    every tensor under this module's names with the adapters unmerged, which Trainer.resume restores
    exactly (a merge is not exactly invertible). What users get is merged(): the plain classifier
    with the adapters folded into its weights, saved by `finetune` as seed_N/model (save_selected).
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, **batch):
        return self.peft_model(**batch)

    def save_pretrained(self, directory, state_dict=None):
        from safetensors.torch import save_file
        self.peft_model.save_pretrained(str(directory))
        from biomamba.train.models import tied_parameters
        weights = dict(self.state_dict() if state_dict is None else state_dict)
        for alias in tied_parameters(self):  # a causal LM's tied head: saved once, as the loop's resume expects
            weights.pop(alias, None)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(Path(directory) / "model.safetensors"))

    def merged(self):
        """The plain classifier, adapters merged and the trained head in place (changes this model)."""
        return self.peft_model.merge_and_unload()


def save_trainable(model, path: Path):
    """The trainable tensors (adapters + head), written atomically."""
    from safetensors.torch import save
    tensors = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_open(path, "wb") as f:
        f.write(save(tensors))


def save_selected(model, tokenizer, out: Path, step: int, trainable: Path | None = None,
                  threshold: float | None = None):
    """The val-selected classifier as a plain model directory `out`: save_pretrained, the tokenizer and
    selected.json ({"step": N}), written in `out`.tmp and renamed in whole (write_model_dir). A LoraClassifier
    first loads `trainable` (save_trainable's tensors of that step) and merges its adapters, which
    changes it: do that once training is done. `threshold`: a multi-label head's, chosen on val at that
    step, saved in config.json as `multilabel_threshold` so that whoever loads `out` predicts as we scored."""
    if isinstance(model, LoraClassifier):
        from safetensors.torch import load_file
        weights = load_file(str(trainable))
        if set(weights) != {n for n, p in model.named_parameters() if p.requires_grad}:
            raise RuntimeError(f"{trainable} does not hold this model's adapters and head")
        model.load_state_dict(weights, strict=False)
        model = model.merged()
    write_model_dir(out, model, tokenizer, extra={SELECTED: {"step": step}},
                    config_updates=None if threshold is None else {THRESHOLD: threshold})


def selected_step(directory: Path) -> int | None:
    """The step a save_selected directory holds; None if there is none (or it is not one)."""
    marker = directory / SELECTED
    return json.loads(marker.read_text())["step"] if marker.is_file() else None


# ----------------------------------------------------------------------------- encoding

def tokenize_examples(examples, tokenizer, family: str, max_length: int) -> list[dict]:
    """Token ids (and BERT token type ids) per example, at most max_length tokens each."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    if family == "bert":
        has_pair = any(p is not None for p in pairs)
        out = tokenizer(texts, [p or "" for p in pairs] if has_pair else None, truncation=True,
                        max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in out]
        return [{k: out[k][i] for k in keys} for i in range(len(examples))]
    eos = tokenizer.eos_token_id
    firsts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    seconds = tokenizer([p or "" for p in pairs], add_special_tokens=False)["input_ids"]
    encoded = []
    for a, b, pair in zip(firsts, seconds, pairs):
        a, b = truncate_pair(a, b if pair is not None else [], max_length - (2 if pair is not None else 1))
        encoded.append({"input_ids": a + [eos] + (b + [eos] if pair is not None else [])})
    return encoded


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """Drop tokens from the end of the longer part until both fit in `budget` (longest first)."""
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]

