"""biomamba: Mamba language models for biomedical text.

    from biomamba import BioMambaConfig, BioMambaForCausalLM

Importing biomamba registers model_type "biomamba" with transformers' Auto classes, so
`AutoConfig.from_pretrained(dir)` and `AutoModelForCausalLM.from_pretrained(dir)` work on our dirs.

The one exception is the `biomamba` command's own process (the console script or `python -m biomamba`):
there the model classes load on first use, after argparse, so `biomamba --help` prints without importing
torch or transformers; biomamba.cli loads them before a subcommand runs, which then sees what a library
user sees.
"""
import os
import sys

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads it: set it before anything here imports torch
# (biomamba/threads.py says why PASSIVE; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept).
if "GOMP_SPINCOUNT" not in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> the module defining it; loaded on first access (PEP 562), or at once outside the command.
_EXPORTS = {"BioMambaConfig": "biomamba.config", "BioMambaModel": "biomamba.modeling",
            "BioMambaForCausalLM": "biomamba.modeling", "BioMambaForEmbedding": "biomamba.modeling",
            "BioMambaForSequenceClassification": "biomamba.modeling",
            "BioMambaForTokenClassification": "biomamba.token_classification",
            "BioMambaPreTrainedModel": "biomamba.modeling"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'biomamba' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def _started_as_the_command() -> bool:
    """True in the process of `biomamba ...` or `python -m biomamba ...` (torchrun's workers included)."""
    if os.path.basename(sys.argv[0]) in ("biomamba", "biomamba.exe", "biomamba-script.py"):
        return True
    argv = getattr(sys, "orig_argv", [])  # the interpreter's own arguments: `python -m biomamba ...`
    return "-mbiomamba" in argv or any(a == "-m" and b == "biomamba" for a, b in zip(argv, argv[1:]))


def load_models():
    """Import the model classes; biomamba.modeling registers them with the Auto classes as it loads."""
    for name in _EXPORTS:
        __getattr__(name)


if not _started_as_the_command():
    load_models()
