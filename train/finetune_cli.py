"""Fine-tune a BioMamba or a BERT-family model on a biomedical classification task, over seeds; or,
with --objective causal-lm, instruction fine-tune a causal LM on a QA task for `biomamba eval-qa`.

  biomamba finetune --task TASK --model MODEL_DIR --out RUN_DIR [--seeds 1,2,3] [--config FILE] [key=value ...]
  biomamba finetune --objective causal-lm --task KIND:FILE --model MODEL_DIR --out RUN_DIR [...]

Examples:
  biomamba finetune --task sentence-roles --model demo_out/tiny/model --out runs/ft-mamba \\
      --config configs/finetune-sentence-roles.yaml data.dir=demo_out/data
  biomamba finetune --task sentence-roles --model demo_out/tiny-bert/model --out runs/ft-bert \\
      --config configs/finetune-sentence-roles.yaml data.dir=demo_out/data
  biomamba report finetune runs/ft-mamba runs/ft-bert

MODEL: a Mamba checkpoint directory (a pretraining RUN_DIR/model, ours, HF MambaForCausalLM or
state-spaces mamba_ssm) -> BioMambaForSequenceClassification (model.pooling=last|mean); any other
directory (BioBERT, PubMedBERT, `biomamba pretrain model.arch=bert` RUN_DIR/model) ->
AutoModelForSequenceClassification. Both get a fresh classifier head. model.init=random keeps the
architecture, config and tokenizer and draws every weight afresh from each seed: the control that
shows what the pretraining adds.

model.lora=true (pip install 'biomamba[lora]', i.e. peft) freezes the backbone and trains LoRA adapters
(model.lora_r, lora_alpha, lora_dropout; model.lora_target_modules, default in_proj/x_proj/out_proj for
BioMamba and peft's query/value for BERTs) plus the head, for every head (sequence, token, bidirectional
token: both backbones adapted, regression, multi-label). Checkpoints keep the adapters unmerged for
exact resume.

TASK:
  sentence-roles          sentence -> abstract section; needs data.dir=PREPARED_DIR (biomamba prepare)
  publication-types       title + abstract -> publication type; needs data.dir=PREPARED_DIR
  bioasq-yesno:FILE.json  BioASQ task B yes/no: question + snippets -> yes/no
  pubmedqa:FILE.json      PubMedQA {id: {QUESTION, CONTEXTS, final_decision}} -> yes/no/maybe
  csv:FILE | jsonl:FILE   columns text, [text_pair], label, [split: train/val/test], [id]
  hf:DIR                  a `datasets` save_to_disk dir (train / validation / test splits)
Files without splits are split by a hash of the example id (data.val_fraction, data.test_fraction).

Every model compared gets the same budget: the config's train.max_steps x train.batch_size and
optim schedule. data.max_length (default 128) caps tokens per example; data.max_train_examples and
data.max_eval_examples take a fixed subset (the same for all seeds and models) to keep CPU runs short.

Each seed trains in RUN_DIR/seed_N (checkpoints, metrics.jsonl, a W&B run NAME-seedN of job_type
finetune: val curve, test scores at each new best, its results as summary), evaluated on
val every train.eval_every steps; the step with the best val macro-F1 is selected and its test
scores kept. RUN_DIR/seed_N/model is that val-selected model, whose test scores are reported (its
checkpoints hold the latest step instead): a plain model directory with its tokenizer, which
BioMambaForSequenceClassification / AutoModelForSequenceClassification.from_pretrained loads (no peft
needed: LoRA adapters are merged in), and selected.json {"step": N}. Without LoRA it is rewritten
at every val improvement, each time into a temporary directory renamed in whole; under LoRA it is
written when the seed finishes, from the adapters saved at each improvement (seed_N/lora_best).
Rerunning the command resumes unfinished seeds (seed_N/model back at the best as of the resumed
checkpoint) and skips finished ones. Writes
RUN_DIR/config.yaml, results.json (per seed val/test accuracy, macro-F1, weighted-F1, per-class
report, wall time; mean and sample std over seeds) and results.md, and a W&B run of job_type
finetune-summary (mean/... and std/... over seeds, a table of the seeds), in the seeds' W&B group.

--objective causal-lm (instruction fine-tuning, as BioMamba fine-tunes for PubMedQA; train/finetune_causal_lm.py):
TASK is an eval-qa task spec of training items (biomamba/data/qa_formats.py): pubmedqa:FILE, bioasq:FILE,
medqa:FILE, medmcqa:FILE, mmlu:FILE or mc:FILE. Each item is eval-qa's prompt for its kind
(eval/qa_prompts.py, e.g. "Abstract: ...\nQuestion: ...\nAnswer:") followed by " " + its gold answer,
tokenized as eval-qa tokenizes a (prompt, answer) pair; the loss is the next-token cross-entropy over
the answer tokens only (labels -100 over the prompt and the padding). MODEL: any local causal LM (a
pretraining RUN_DIR: BioMamba, or the GPT-NeoX baseline of model.arch=transformer; HF Mamba,
state-spaces, any transformers causal-LM dir). Full fine-tuning, or model.lora=true (adapters on the
frozen model: in_proj/x_proj/out_proj for BioMamba, peft's default for transformers models; merged
into seed_N/model at the end, unmerged in the checkpoints for exact resume). data.val_fraction of the
items (by a hash of the item id) are held out for the val answer loss; data.max_length tokens per
item (longer: the prompt loses tokens on the left, as eval-qa truncates). Each seed writes
RUN_DIR/seed_N/model (the model of the last step, with its tokenizer), checkpoints, metrics.jsonl
and config.yaml; RUN_DIR/results.json + results.md sum the seeds up. Score it with
  biomamba eval-qa --model RUN_DIR/seed_N --task pubmedqa:TEST.json --out qa.json
(`--model RUN_DIR` when there is one seed); eval-qa records the run it came from (run dir, objective,
task, seed, LoRA or full) in OUT.json's model.trained_by.
"""
# This module is the command's face: `--help` imports it alone, so it loads neither torch nor
# transformers; biomamba.train.finetune holds the run and is imported by `run` (biomamba/cli.py).
from biomamba import flags


def add_arguments(parser):
    parser.add_argument("--task", help="TASK (see above); or `task:` in the config")
    parser.add_argument("--objective", choices=["classification", "causal-lm"],
                        help="classification (default) or causal-lm (instruction fine-tuning for eval-qa); "
                             "or `objective:` in the config")
    parser.add_argument("--model", help="model directory (see above); or `model.path:` in the config")
    parser.add_argument("--out", required=True, help="run directory (unfinished seeds are resumed)")
    parser.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (default: the config's seeds)")
    parser.add_argument("--config", help="YAML config (see configs/finetune-*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.max_steps=50 data.dir=DIR logging.wandb=false")
    flags.add_arguments(parser, ["tokenizer", "device", "precision", *flags.WANDB])


def run(args) -> int:
    from biomamba.train.finetune import run

    return run(args)
