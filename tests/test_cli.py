"""The `biomamba` command: help, generate, bench listing, and clear errors."""
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from biomamba.cli import COMMANDS, main
from biomamba.eval.report import SCHEMAS
from tests.model_helpers import tiny_model


def _word_tokenizer(path):
    words = ["<|endoftext|>", "the", "patients", "were", "randomised", "to", "placebo", "or", "drug"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(path)


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "biomamba", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("prepare", "generate", "bench"):
        assert name in out.stdout


def test_generate_prints_prompt_and_continuation(tmp_path, capsys):
    tiny_model(vocab_size=9).save_pretrained(tmp_path)
    _word_tokenizer(tmp_path)
    code = main(["generate", "--model", str(tmp_path), "--prompt", "the patients were",
                 "--prompt", "placebo", "--max-new-tokens", "4"])
    assert code == 0
    printed = capsys.readouterr().out.split("---")
    assert printed[0].strip().startswith("the patients were")
    assert len(printed[0].split()) <= 3 + 4  # greedy stops early only at EOS
    assert printed[1].strip().startswith("placebo")


def test_generate_without_tokenizer_says_what_to_pass(tmp_path, capsys):
    tiny_model().save_pretrained(tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 1
    assert "--tokenizer" in capsys.readouterr().err


def test_bench_lists_scripts(capsys):
    assert main(["bench"]) == 0
    assert "cpu_train" in capsys.readouterr().out


def _help_invocations():
    """`biomamba --help`, every command's and every group action's and report schema's `--help`."""
    yield []
    for name, (target, _) in COMMANDS.items():
        yield [name]
        for action in target if isinstance(target, dict) else ():
            yield [name, action]
    for schema in SCHEMAS:
        yield ["report", schema]


def _imported_modules(argv) -> set:
    """Top-level modules a fresh `python -m biomamba ARGV --help` imports (-X importtime's report)."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "biomamba", *argv, "--help"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage: biomamba" in run.stdout
    return {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", list(_help_invocations()), ids=lambda argv: " ".join(argv) or "biomamba")
def test_help_imports_neither_torch_nor_transformers(argv):
    imported = _imported_modules(argv)
    assert "biomamba.cli" in imported  # the report is read right: the command's own modules are in it
    assert not imported & {"torch", "transformers"}, argv


def test_the_command_still_registers_the_auto_classes_before_a_subcommand_runs(tmp_path):
    # A script named like the console script runs as the command does: `import biomamba` defers the model
    # classes (no torch yet), and cli.main loads and registers them after argparse, before the subcommand.
    tiny_model().save_pretrained(tmp_path / "model")
    script = tmp_path / "biomamba"
    script.write_text("import sys\nimport biomamba\nassert 'torch' not in sys.modules, 'torch at import'\n"
                      "from biomamba.cli import main\ncode = main(sys.argv[1:])\n"
                      "from transformers import AutoConfig\nAutoConfig.for_model('biomamba')\nsys.exit(code)\n")
    run = subprocess.run([sys.executable, str(script), "export", "--model", str(tmp_path / "model"),
                          "--to", "transformers", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
