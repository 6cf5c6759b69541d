"""biomamba: Mamba language models for biomedical text.

Top level (fixed by the project card): biomamba/ (the library), kernels/ (compiled sources only),
train/, eval/, tests/. An install puts one top-level package into site-packages, `biomamba`:
    train/   -> biomamba.train     (pretrain, finetune, retrieval training)
    eval/    -> biomamba.eval      (evaluation commands and reports)
    kernels/ -> biomamba/kernels/  (C++/CUDA sources as package data, JIT-built on first use;
                                    no Python module: transformers probes `import kernels`)
so no generic `train` or `eval` package collides with another project's.
"""
import os

from setuptools import find_packages, setup


KERNEL_SOURCES = ["cpu/*.cpp", "cpu/*.h", "cuda/*.cpp", "cuda/*.cu", "cuda/*.cuh", "cuda/*.h"]


def cuda_build_kwargs():
    """BIOMAMBA_CUDA_BUILD=1 prebuilds the CUDA kernels (kernels/cuda) as biomamba._cuda_kernels.

    Needs a CUDA build of torch in the environment: `BIOMAMBA_CUDA_BUILD=1 pip install
    --no-build-isolation -e .`. Without it the kernels are JIT-built on first use on a GPU.
    """
    if os.environ.get("BIOMAMBA_CUDA_BUILD") != "1":
        return {}
    from biomamba.ops.cuda import cuda_setup_kwargs
    return cuda_setup_kwargs()


setup(
    name="biomamba",
    version="0.1.0",
    description="Mamba (selective state-space) language models for biomedical text",
    python_requires=">=3.10",
    packages=[*find_packages(include=["biomamba", "biomamba.*"]), "biomamba.train", "biomamba.eval",
              "biomamba.kernels"],
    package_dir={"biomamba.train": "train", "biomamba.eval": "eval", "biomamba.kernels": "kernels"},
    package_data={"biomamba.kernels": KERNEL_SOURCES},
    install_requires=[
        "torch>=2.3,<2.14",
        "transformers>=5.23,<6",  # DynamicCache linear-attention layers (tested on 5.23)
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pubmed_parser>=0.5",
        "lxml>=5.0",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "rich>=13",
        "wandb>=0.18",
        "datasets>=3.0",
        "bm25s>=0.2",
        "PyStemmer>=2.2",
        "pytrec_eval-terrier>=0.5.6",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "ninja>=1.11",
    ],
    extras_require={
        # peft: the LoRA fine-tuning tests; lm-eval: eval-ppl is tested against lm-eval's own HFLM;
        # seqeval: entity-level F1 (strict IOB2), the reference of biomamba.metrics.blurb and the silver
        # chemical NER baseline's scorer; pytest-xdist: `make test` runs the suite on every core; gguf: the
        # GGUF export and its tests
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "peft>=0.21", "lm-eval>=0.4.13", "seqeval>=1.2.2", "gguf>=0.19"],
        # gguf (llama.cpp's gguf-py, pure Python): `biomamba export --to gguf`
        "gguf": ["gguf>=0.19"],
        # Optional GPU peers; they neither install nor import without CUDA (see FACTS.md).
        "cuda": ["mamba-ssm>=2.2", "causal-conv1d>=1.4"],
        "lora": ["peft>=0.21"],  # tested with 0.21.2 (constraints.txt) and transformers 5
    },
    entry_points={"console_scripts": ["biomamba=biomamba.cli:main"]},
    **cuda_build_kwargs(),
)
