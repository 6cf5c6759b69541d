"""Models the pretraining loop can build: BioMamba, and a GPT-NeoX or a BERT (masked LM) of matched size."""
import torch
from transformers import BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from biomamba import BioMambaConfig, BioMambaForCausalLM
from biomamba.resolve import model_dir_of


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tied_parameters(model) -> dict:
    """{alias: name} for parameters reachable under a second name (a tied LM head): save_pretrained
    writes only `name`, the first one named_parameters() meets."""
    first, aliases = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def mamba_config(cfg_model, vocab_size: int, eos_id: int) -> BioMambaConfig:
    overrides = {k: getattr(cfg_model, k) for k in ("d_model", "n_layer", "d_state")
                 if getattr(cfg_model, k) is not None}
    return BioMambaConfig.from_preset(cfg_model.preset, ssm_layer=cfg_model.ssm_layer, vocab_size=vocab_size,
                                      eos_token_id=eos_id,
                                      bos_token_id=eos_id, pad_token_id=eos_id,
                                      scan_backend=cfg_model.scan_backend, **overrides)


def build_mamba(cfg, vocab_size: int, eos_id: int):
    if cfg.model.init_from:
        model = BioMambaForCausalLM.from_pretrained(model_dir_of(cfg.model.init_from))
        if model.config.vocab_size < vocab_size:
            raise ValueError(f"model.init_from={cfg.model.init_from}: its vocabulary "
                             f"({model.config.vocab_size}) is smaller than the data's tokenizer ({vocab_size})")
        model.config.scan_backend = cfg.model.scan_backend
        return model.train()
    return BioMambaForCausalLM(mamba_config(cfg.model, vocab_size, eos_id))


def layers_matching(make, target_params: int) -> int:
    """The layer count whose model (make(layers)) has the parameter count closest to the target."""
    with torch.device("meta"):
        per_layer = count_parameters(make(2)) - count_parameters(make(1))
        base = count_parameters(make(1)) - per_layer
    return max(1, round((target_params - base) / per_layer))


def build_transformer(cfg, vocab_size: int, eos_id: int, target_params: int):
    """A GPT-NeoX at the Mamba's width, with the layer count that best matches its parameters."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    width = mamba_config(cfg.model, vocab_size, eos_id).d_model

    def make(layers):
        config = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                               num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                               max_position_embeddings=max(2048, cfg.data.seq_len),
                               tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
                               pad_token_id=eos_id, attention_dropout=0.0, hidden_dropout=0.0)
        return GPTNeoXForCausalLM(config)

    return make(layers_matching(make, target_params))


class ScoredOnlyBertForMaskedLM(BertForMaskedLM):
    """BertForMaskedLM (the same modules and weights) whose forward with labels runs the MLM head only at
    the scored positions (labels != -100), as ModernBERT's sparse_prediction does: the same loss, but
    the head's (positions, vocab) product, half of a tiny BERT's compute, shrinks to the ~15% scored.
    Its `logits` are then (scored positions, vocab); without labels it is BertForMaskedLM."""

    def forward(self, input_ids=None, labels=None, **kwargs):
        if labels is None:
            return super().forward(input_ids=input_ids, **kwargs)
        hidden = self.bert(input_ids, return_dict=True, **kwargs).last_hidden_state  # (B, T, D)
        scored = labels != -100  # (B, T)
        logits = self.cls(hidden[scored])  # (S, V), S scored positions
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[scored])
        return MaskedLMOutput(loss=loss, logits=logits)


def build_bert(cfg, vocab_size: int, eos_id: int, target_params: int):
    """A BertForMaskedLM at the Mamba's width, with the layer count that best matches its parameters.
    No dropout, like the Mamba. vocab_size counts the [CLS]/[SEP]/[MASK] added by train/mlm.py."""
    from transformers import BertConfig

    width = mamba_config(cfg.model, vocab_size, eos_id).d_model

    def make(layers):
        config = BertConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                            max_position_embeddings=max(512, cfg.data.seq_len + 1), hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, pad_token_id=eos_id, tie_word_embeddings=True)
        return ScoredOnlyBertForMaskedLM(config)

    model = make(layers_matching(make, target_params))
    # read by the loop's param_groups; the tied decoder weight is the same parameter
    model.bert.embeddings.word_embeddings.weight._lr_scale = cfg.mlm.word_embedding_lr_ratio
    return model


def build_model(cfg, vocab_size: int, eos_id: int):
    torch.manual_seed(cfg.seed)
    mamba = build_mamba(cfg, vocab_size, eos_id)
    if cfg.model.arch == "mamba":
        return mamba
    if cfg.model.arch == "transformer":
        torch.manual_seed(cfg.seed)
        return build_transformer(cfg, vocab_size, eos_id, count_parameters(mamba))
    if cfg.model.arch == "bert":
        torch.manual_seed(cfg.seed)
        return build_bert(cfg, vocab_size, eos_id, count_parameters(mamba))
    raise ValueError(f"model.arch must be mamba, transformer or bert, got {cfg.model.arch!r}")
