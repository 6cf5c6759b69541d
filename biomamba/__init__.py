"""biomamba: Mamba language models for biomedical text.

    from biomamba import BioMambaConfig, BioMambaForCausalLM

Importing biomamba registers model_type "biomamba" with transformers' Auto classes, so
`AutoConfig.from_pretrained(dir)` and `AutoModelForCausalLM.from_pretrained(dir)` work on our dirs.
"""
__version__ = "0.1.0"

from biomamba.config import BioMambaConfig  # noqa: E402
from biomamba.modeling import (  # noqa: E402
    BioMambaForCausalLM,
    BioMambaModel,
    BioMambaForEmbedding,
    BioMambaForSequenceClassification,
    BioMambaPreTrainedModel,
)

__all__ = ["__version__", "BioMambaConfig", "BioMambaModel", "BioMambaForCausalLM",
           "BioMambaForSequenceClassification", "BioMambaForEmbedding",
           "BioMambaPreTrainedModel"]
