"""BioMambaConfig: one config for the Mamba LM, a transformers PreTrainedConfig.

Field names follow state-spaces/mamba (d_model, n_layer, d_state, ...); `hidden_size` and
`num_hidden_layers` are aliases so transformers utilities find them. Presets match the released
state-spaces sizes, plus `debug` (tests) and `tiny` (the CPU default run and the CPU benchmark).
"""
import math

from transformers import PreTrainedConfig

# name -> (d_model, n_layer, vocab_size); state-spaces sizes use the GPT-NeoX-20B vocab (50277,
# padded to a multiple of 8 = 50280 as in the released checkpoints).
PRESETS = {
    "debug": dict(d_model=32, n_layer=2, vocab_size=512),
    "tiny": dict(d_model=256, n_layer=4, vocab_size=8000),
    "130m": dict(d_model=768, n_layer=24, vocab_size=50280),
    "370m": dict(d_model=1024, n_layer=48, vocab_size=50280),
    "790m": dict(d_model=1536, n_layer=48, vocab_size=50280),
    "1.4b": dict(d_model=2048, n_layer=48, vocab_size=50280),
    "2.8b": dict(d_model=2560, n_layer=64, vocab_size=50280),
}

SCAN_BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "mamba_ssm")


class BioMambaConfig(PreTrainedConfig):
    """Mamba-1 LM hyperparameters (paper symbols: D = d_model, E = expand, N = d_state)."""

    model_type = "biomamba"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layer"}

    vocab_size: int = 8000
    d_model: int = 256
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    pad_vocab_size_multiple: int = 8
    scan_backend: str = "auto"
    pooling: str = "last"  # heads: "last" (the last real token) or "mean" (over real tokens)
    embedding_dim: int | None = None  # BioMambaForEmbedding: optional projection size
    pad_token_id: int | None = 0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    tie_word_embeddings: bool = True
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        super().__post_init__(**kwargs)
        self.check()

    @property
    def d_inner(self) -> int:
        return int(self.expand * self.d_model)

    @property
    def layer_types(self) -> list[str]:
        # transformers' DynamicCache(config=...) gives each "linear_attention" layer a conv state and a
        # recurrent state, as for its own Mamba; the tensors' shapes come from what the mixer stores.
        return ["linear_attention"] * self.n_layer

    def check(self):
        """Collect every problem with the hyperparameters and raise them together."""
        problems = []
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.dt_min <= self.dt_max:
            problems.append(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if self.dt_init not in ("random", "constant"):
            problems.append(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        if self.pooling not in ("last", "mean"):
            problems.append(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.scan_backend not in SCAN_BACKENDS:
            problems.append(f"scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")
        if problems:
            raise ValueError("invalid BioMambaConfig:\n  " + "\n  ".join(problems))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BioMambaConfig":
        """A config for a named size (see PRESETS), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
