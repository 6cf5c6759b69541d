"""The Mamba-2 mixer (SSD), the block type `config.ssm_layer = "Mamba2"` chooses.

Code names and the paper's symbols (Dao & Gu 2024, "Transformers are SSMs", Section 7.1 and
Figure 6), as mamba_ssm/modules/mamba2.py names them:
    d_inner     E * D (expand E = 2), the channels the SSM runs on
    h, nheads   H heads of p = headdim P channels each (h * p = d_inner)
    g, ngroups  G groups of heads sharing B and C (like grouped-value attention)
    n, d_state  N, the state size of each head: its state is a (p, n) matrix
    z           the gate;  x, B, C, dt come from the same input projection ("parallel" block)
    A           one scalar per head (A = -exp(A_log)); D per head (or per channel: D_has_hdim)
The forward, in mamba_ssm's order (Mamba2.forward, its `use_mem_eff_path=False` branch):
    1. in_proj: u (b, l, D) -> z (b, l, d_inner), xBC (b, l, d_inner + 2 g n), dt (b, l, h)
    2. depthwise causal conv + SiLU over xBC (x, B and C together)
    3. SSD scan (ops.ssd_scan: softplus(dt + dt_bias), clamped to dt_limit; chunked in chunk_size)
    4. gated RMSNorm of y with z (group size d_inner / ngroups), or y * silu(z) without rmsnorm
    5. out_proj: (b, l, d_inner) -> (b, l, D)
Decoding runs one recurrent step per token (Mamba2.step): ops.causal_conv1d_update on xBC and
ops.ssd_state_update on the (b, h, p, n) state. Parameter names are Mamba2's (in_proj, conv1d,
dt_bias, A_log, D, norm, out_proj), so state-spaces and transformers checkpoints load by copying keys.
"""
import torch
import torch.nn.functional as F
from torch import nn

from biomamba import ops
from biomamba.generation import mask_padding
from biomamba.modeling import RMSNorm, SSMMixer, init_dt_bias, init_out_proj

# On CPU the SSD scan runs chunks of at most this many steps, whatever config.chunk_size says:
# chunking changes rounding, never the result, and the torch scan's in-chunk work and (T, T)
# tensors grow with the chunk. At length 1024 (4 x 8 heads of 64, d_state 64, 2 cores) a layer's
# forward + backward took 0.3 s in chunks of 64 against 0.7 s in chunks of 256 (32: 0.5 s).
# config.chunk_size stays what mamba_ssm's kernel (CUDA) and transformers' Mamba2 use.
CPU_CHUNK_SIZE = 64


class GatedRMSNorm(RMSNorm):
    """mamba_ssm's RMSNormGated: RMS-normalise each group of `group_size` channels, gated by z.

    norm_before_gate=False (Mamba-2's default): norm(y * silu(z)); True: norm(y) * silu(z).
    Computed in fp32, returned in y's dtype.
    """

    def __init__(self, dim, group_size, eps=1e-5, norm_before_gate=False):
        super().__init__(dim, eps)
        self.group_size, self.norm_before_gate = group_size, norm_before_gate

    def forward(self, y, z):
        dtype = y.dtype
        y, gate = y.float(), F.silu(z.float())
        if not self.norm_before_gate:
            y = y * gate
        groups = y.unflatten(-1, (-1, self.group_size))  # (..., g, d_inner / g)
        y = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        y = y * self.weight.float()
        if self.norm_before_gate:
            y = y * gate
        return y.to(dtype)


class Mamba2Mixer(SSMMixer):
    """The SSD block: in_proj -> causal conv over x, B, C -> SSD scan -> gated norm -> out_proj."""

    FP32_PARAMETERS = ("A_log", "D", "dt_bias")

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        d_inner, h, conv_dim = config.d_inner, config.nheads, config.conv_dim
        self.in_proj = nn.Linear(config.d_model, d_inner + conv_dim + h, bias=config.bias)  # z, xBC, dt
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, config.d_conv, groups=conv_dim,
                                padding=config.d_conv - 1, bias=config.conv_bias)
        # A_log, D and dt_bias stay fp32 (SSMMixer._apply) and take no weight decay.
        self.dt_bias = nn.Parameter(torch.empty(h, dtype=torch.float32))
        self.A_log = nn.Parameter(torch.empty(h, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(d_inner if config.D_has_hdim else h, dtype=torch.float32))
        self._mark_fp32_parameters()
        if config.rmsnorm:
            self.norm = GatedRMSNorm(d_inner, d_inner // config.ngroups, config.rms_norm_eps,
                                     config.norm_before_gate)
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=config.bias)

    def init_ssm_parameters(self):
        """mamba_ssm's Mamba2.__init__: A uniform in A_init_range, dt log-uniform in [dt_min, dt_max]
        (stored as softplus^-1 in dt_bias), D = 1; out_proj as mixer_seq_simple rescales it."""
        cfg = self.config
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log).uniform_(*cfg.A_init_range)))
        self.dt_bias.copy_(init_dt_bias(cfg.nheads, cfg))
        self.D.fill_(1.0)
        if self.in_proj.bias is not None:
            nn.init.zeros_(self.in_proj.bias)
        init_out_proj(self.out_proj, cfg)

    def forward(self, hidden_states, attention_mask=None, cache=None, seq_idx=None):
        """hidden_states: (b, l, d_model) -> (b, l, d_model); pads enter neither the conv nor the scan,
        and with seq_idx (b, l) packed documents never see each other (conv and scan reset)."""
        cfg = self.config
        z, xBC, dt = self.in_proj(hidden_states).split([cfg.d_inner, cfg.conv_dim, cfg.nheads], dim=-1)
        xBC = mask_padding(xBC.transpose(1, 2), attention_mask)  # (b, conv_dim, l)
        A = -torch.exp(self.A_log.float())  # (h,)
        if cache is not None and cache.has_previous_state(self.layer_idx):
            y = self._steps(xBC, dt, A, cache)
        else:
            y = self._scan(xBC, dt, A, attention_mask, cache, seq_idx)
        return self.out_proj(self._gate(y, z).to(hidden_states.dtype))  # (b, l, d_model)

    def _split(self, xBC):
        """xBC (..., conv_dim) -> x (..., h, p), B (..., g, n), C (..., g, n)."""
        cfg = self.config
        x, B, C = xBC.split([cfg.d_inner, cfg.ngroups * cfg.d_state, cfg.ngroups * cfg.d_state], dim=-1)
        return (x.unflatten(-1, (cfg.nheads, cfg.headdim)), B.unflatten(-1, (cfg.ngroups, cfg.d_state)),
                C.unflatten(-1, (cfg.ngroups, cfg.d_state)))

    def _D(self):
        """D as ops.ssd_scan takes it: (h,) or (h, p)."""
        return self.D.float().view(self.config.nheads, -1) if self.config.D_has_hdim else self.D.float()

    def _gate(self, y, z):
        """y, z (b, l, d_inner) -> the gated output, before out_proj."""
        if self.config.rmsnorm:
            return self.norm(y, z)
        return (y.float() * F.silu(z.float())).to(y.dtype)

    def _scan(self, xBC, dt, A, attention_mask, cache, seq_idx=None):
        """Whole-sequence path: xBC (b, conv_dim, l), dt (b, l, h) -> y (b, l, d_inner); fills
        `cache` with the final conv and SSM states when given."""
        cfg = self.config
        if cache is not None:  # keeps the last d_conv inputs of the conv, left-padded with zeros
            cache.update_conv_state(xBC, self.layer_idx, conv_kernel_size=cfg.d_conv)
        backend = ops.resolve_ssd_backend(cfg.scan_backend, xBC.device)
        self.backends_used.update(causal_conv1d=ops.resolve_conv_backend(), ssd_scan=backend)
        xBC = ops.causal_conv1d(xBC, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                                seq_idx=seq_idx)
        x, B, C = self._split(mask_padding(xBC, attention_mask).transpose(1, 2))  # (b, l, h, p), (b, l, g, n) x2
        chunk_size = min(cfg.chunk_size, CPU_CHUNK_SIZE) if x.device.type == "cpu" else cfg.chunk_size
        y = ops.ssd_scan(x, dt, A, B, C, chunk_size, D=self._D(), dt_bias=self.dt_bias.float(),
                         seq_idx=seq_idx, dt_softplus=True, dt_limit=cfg.dt_limit,
                         return_final_states=cache is not None, backend=backend)
        if cache is not None:
            y, last_state = y
            cache.update_recurrent_state(last_state, self.layer_idx)
        return y.flatten(2)  # (b, l, d_inner)

    def _steps(self, xBC, dt, A, cache):
        """Tokens that continue a filled cache, one recurrent step each: xBC (b, conv_dim, l),
        dt (b, l, h) -> y (b, l, d_inner)."""
        conv_state = cache.get_conv_state(self.layer_idx)  # (b, conv_dim, d_conv), updated in place
        ssm_state = cache.get_recurrent_state(self.layer_idx)  # (b, h, p, n), updated in place
        if xBC.shape[-1] == 1:  # the decoding step (skips the stack's copy)
            return self._step(xBC[:, :, 0], dt[:, 0], A, conv_state, ssm_state).unsqueeze(1)
        steps = [self._step(xBC[:, :, t], dt[:, t], A, conv_state, ssm_state) for t in range(xBC.shape[-1])]
        return torch.stack(steps, dim=1)

    def _step(self, xBC, dt, A, conv_state, ssm_state):
        """One decoding step: xBC (b, conv_dim), dt (b, h) -> y (b, d_inner); updates both states in place."""
        xBC = ops.causal_conv1d_update(xBC, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu")
        x, B, C = self._split(xBC)  # (b, h, p), (b, g, n), (b, g, n)
        y = ops.ssd_state_update(ssm_state, x, dt, A, B, C, self._D(), dt_bias=self.dt_bias.float(),
                                 dt_softplus=True, dt_limit=self.config.dt_limit)
        return y.flatten(1)  # (b, d_inner)
