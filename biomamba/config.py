"""BioMambaConfig: one config for the Mamba LM of either block type, a transformers PreTrainedConfig.

Field names follow state-spaces/mamba (d_model, n_layer, d_state, ...); `hidden_size` and
`num_hidden_layers` are aliases so transformers utilities find them. The block type is a field,
`ssm_layer` ("Mamba1" | "Mamba2"), as mamba_ssm's `ssm_cfg={"layer": "Mamba2"}` chooses it; the
Mamba-2 fields keep mamba_ssm's Mamba2 names (headdim, ngroups, chunk_size, dt_limit, A_init_range,
D_has_hdim, rmsnorm, norm_before_gate). Presets match the released state-spaces sizes of both
families, plus `debug` (tests) and `tiny` (the CPU default run and the CPU benchmark) of each; the
block type is never part of a preset's name (`from_preset("130m", ssm_layer="Mamba2")`).
"""
import math

from transformers import PreTrainedConfig

SSM_LAYERS = ("Mamba1", "Mamba2")

# block type -> size -> fields: a preset is a size of one block type (`from_preset("tiny",
# ssm_layer="Mamba2")`; in run configs `model.preset=tiny model.ssm_layer=Mamba2`). The Mamba-1 sizes
# use the GPT-NeoX-20B vocab (50277, padded to a multiple of 8 = 50280 as in the released checkpoints);
# the Mamba-2 ones pad it to a multiple of 16 (50288), with d_state 128, headdim 64, expand 2, ngroups 1,
# chunk 256 (mamba_ssm's Mamba2 defaults). The sizes are the released state-spaces ones of each family.
_MAMBA2 = dict(pad_vocab_size_multiple=16)
PRESETS = {
    "Mamba1": {
        "debug": dict(d_model=32, n_layer=2, vocab_size=512),
        "tiny": dict(d_model=256, n_layer=4, vocab_size=8000),
        "130m": dict(d_model=768, n_layer=24, vocab_size=50280),
        "370m": dict(d_model=1024, n_layer=48, vocab_size=50280),
        "790m": dict(d_model=1536, n_layer=48, vocab_size=50280),
        "1.4b": dict(d_model=2048, n_layer=48, vocab_size=50280),
        "2.8b": dict(d_model=2560, n_layer=64, vocab_size=50280),
    },
    "Mamba2": {
        # 4 heads of 16, chunks of 16: the tests cross chunk boundaries at a few dozen tokens
        "debug": dict(d_model=32, n_layer=2, vocab_size=512, d_state=16, headdim=16, chunk_size=16),
        # parameter-matched to Mamba-1 "tiny" (3.78M vs 3.80M parameters): 8 heads of 64, d_state 64
        "tiny": dict(d_model=256, n_layer=4, vocab_size=8000, d_state=64),
        "130m": dict(**_MAMBA2, d_model=768, n_layer=24, vocab_size=50288),
        "370m": dict(**_MAMBA2, d_model=1024, n_layer=48, vocab_size=50288),
        "780m": dict(**_MAMBA2, d_model=1536, n_layer=48, vocab_size=50288),
        "1.3b": dict(**_MAMBA2, d_model=2048, n_layer=48, vocab_size=50288),
        "2.7b": dict(**_MAMBA2, d_model=2560, n_layer=64, vocab_size=50288),
    },
}
# The names the Mamba-2 presets had when the block type was part of the name; refused with the new spelling.
_OLD_MAMBA2_PRESETS = {"debug-mamba2": "debug", "tiny-mamba2": "tiny", "mamba2-130m": "130m", "mamba2-370m": "370m",
                       "mamba2-780m": "780m", "mamba2-1.3b": "1.3b", "mamba2-2.7b": "2.7b"}
DEFAULT_D_STATE = {"Mamba1": 16, "Mamba2": 128}  # mamba_ssm's Mamba and Mamba2 defaults

SCAN_BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "mamba_ssm")
# ssd_scan's backends (biomamba.ops): the scan_backend choices of a Mamba-2 model
SSD_BACKENDS = ("auto", "ref", "torch", "cpu", "mamba_ssm")


class BioMambaConfig(PreTrainedConfig):
    """Mamba LM hyperparameters (paper symbols: D = d_model, E = expand, N = d_state, P = headdim)."""

    model_type = "biomamba"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layer"}

    ssm_layer: str = "Mamba1"  # the block: "Mamba1" (selective scan) or "Mamba2" (SSD)
    vocab_size: int = 8000
    d_model: int = 256
    n_layer: int = 4
    d_state: int | None = None  # None: the block's default (DEFAULT_D_STATE)
    d_conv: int = 4
    expand: int = 2
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    # Mamba-1 only: the rank of dt's projection and its initialisation
    dt_rank: int | str = "auto"
    dt_init: str = "random"
    dt_scale: float = 1.0
    # Mamba-2 only (mamba_ssm Mamba2's arguments)
    headdim: int = 64  # P: channels per head; heads = d_inner / headdim
    ngroups: int = 1  # groups of heads sharing B and C
    chunk_size: int = 256  # the SSD scan's block length, rounding only (on CPU: at most mamba2.CPU_CHUNK_SIZE)
    dt_limit: tuple[float, float] | list[float] = (0.0, float("inf"))  # dt clamped to it after softplus
    A_init_range: tuple[float, float] | list[float] = (1.0, 16.0)  # A = -U(A_init_range) per head
    D_has_hdim: bool = False  # D per channel (d_inner,) rather than per head
    rmsnorm: bool = True  # gated RMSNorm (group size d_inner / ngroups) before out_proj, else y * silu(z)
    norm_before_gate: bool = False  # norm(y) * silu(z) rather than norm(y * silu(z))
    # both
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    pad_vocab_size_multiple: int = 8
    scan_backend: str = "auto"  # of selective_scan (Mamba1) or ssd_scan (Mamba2)
    pooling: str = "last"  # heads: "last" (the last real token) or "mean" (over real tokens)
    embedding_dim: int | None = None  # BioMambaForEmbedding: optional projection size
    # BioMambaForTokenClassification: a second backbone reads each row right to left; its states are
    # concatenated with ("concat") or added to ("sum") the forward ones (biomamba/token_classification.py)
    bidirectional: bool = False
    bidirectional_merge: str = "concat"
    pad_token_id: int | None = 0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    tie_word_embeddings: bool = True
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if self.d_state is None:
            self.d_state = DEFAULT_D_STATE.get(self.ssm_layer, 16)
        # JSON gives lists back; the ops compare with tuples
        self.dt_limit = tuple(float(v) for v in self.dt_limit)
        self.A_init_range = tuple(float(v) for v in self.A_init_range)
        super().__post_init__(**kwargs)
        self.check()

    @property
    def d_inner(self) -> int:
        return int(self.expand * self.d_model)

    @property
    def nheads(self) -> int:
        """Mamba-2's heads (d_inner / headdim)."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: d_inner (Mamba-1), or x, B and C (Mamba-2)."""
        if self.ssm_layer == "Mamba2":
            return self.d_inner + 2 * self.ngroups * self.d_state
        return self.d_inner

    @property
    def layer_types(self) -> list[str]:
        # transformers' DynamicCache(config=...) gives each "linear_attention" layer a conv state and a
        # recurrent state, as for its own Mamba; the tensors' shapes come from what the mixer stores.
        return ["linear_attention"] * self.n_layer

    def check(self):
        """Collect every problem with the hyperparameters and raise them together."""
        problems = []
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "headdim",
                     "ngroups", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.ssm_layer not in SSM_LAYERS:
            problems.append(f"ssm_layer must be one of {SSM_LAYERS}, got {self.ssm_layer!r}")
        if not 0 < self.dt_min <= self.dt_max:
            problems.append(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if self.dt_init not in ("random", "constant"):
            problems.append(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        if self.pooling not in ("last", "mean"):
            problems.append(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.bidirectional_merge not in ("concat", "sum"):
            problems.append(f"bidirectional_merge must be 'concat' or 'sum', got {self.bidirectional_merge!r}")
        if self.scan_backend not in SCAN_BACKENDS:
            problems.append(f"scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")
        if self.ssm_layer == "Mamba2":
            problems += self._mamba2_problems()
        if problems:
            raise ValueError("invalid BioMambaConfig:\n  " + "\n  ".join(problems))

    def _mamba2_problems(self) -> list[str]:
        problems = []
        if isinstance(self.headdim, int) and self.headdim > 0 and self.d_inner % self.headdim:
            problems.append(f"d_inner = expand * d_model = {self.d_inner} must be divisible by headdim {self.headdim}")
        elif isinstance(self.ngroups, int) and self.ngroups > 0 and self.nheads % self.ngroups:
            problems.append(f"the {self.nheads} heads (d_inner / headdim) must be divisible by ngroups {self.ngroups}")
        if len(self.dt_limit) != 2 or not 0 <= self.dt_limit[0] <= self.dt_limit[1]:
            problems.append(f"dt_limit must be (low, high) with 0 <= low <= high, got {self.dt_limit}")
        if len(self.A_init_range) != 2 or not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            problems.append(f"A_init_range must be (low, high) with 0 < low <= high, got {self.A_init_range}")
        if self.scan_backend not in SSD_BACKENDS:
            problems.append(f"scan_backend {self.scan_backend!r} has no SSD scan (Mamba2 blocks); "
                            f"choose one of {SSD_BACKENDS}")
        return problems

    @classmethod
    def from_preset(cls, name: str, ssm_layer: str = "Mamba1", **overrides) -> "BioMambaConfig":
        """A config for a named size of a block type (see PRESETS), with any field overridden."""
        problem = preset_problem(name, ssm_layer)
        if problem:
            raise ValueError(problem)
        return cls(**{**PRESETS[ssm_layer][name], "ssm_layer": ssm_layer, **overrides})


def preset_problem(name: str, ssm_layer: str, preset_key: str = "preset", layer_key: str = "ssm_layer") -> str | None:
    """Why (name, ssm_layer) names no preset, or None; the keys are how the caller spells the two settings."""
    if name in _OLD_MAMBA2_PRESETS:
        return (f"{preset_key}={name} is now {preset_key}={_OLD_MAMBA2_PRESETS[name]} {layer_key}=Mamba2 "
                f"(the block type has one spelling, {layer_key})")
    if ssm_layer not in PRESETS:
        return f"{layer_key} must be one of {', '.join(SSM_LAYERS)}, got {ssm_layer!r}"
    if name not in PRESETS[ssm_layer]:
        return (f"unknown {preset_key} {name!r} for {layer_key}={ssm_layer}; choose one of "
                f"{', '.join(PRESETS[ssm_layer])}")
    return None
