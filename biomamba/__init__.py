"""biomamba: Mamba language models for biomedical text.

    from biomamba import BioMambaConfig, BioMambaForCausalLM

Heavy modules (torch, transformers) load on first use so that `biomamba --help` stays fast.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "BioMambaConfig": "biomamba.config",
    "BioMambaModel": "biomamba.modeling",
    "BioMambaForCausalLM": "biomamba.modeling",
    "BioMambaPreTrainedModel": "biomamba.modeling",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biomamba' has no attribute {name!r}")
