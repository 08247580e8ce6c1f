"""The transformers backend: any causal LM from Hugging Face, on CPU (fp32) or GPU (bf16).

Generation is a plain sampling loop over the KV cache so that every sampled token's log-prob is
exact (temperature applied, no top-k/top-p) and sampling is reproducible from a seed through a
`torch.Generator`, independent of the global RNG. Prompts are left-padded, so in `logprobs` all
responses start at the same position and only the response slice of the logits is computed.
The model stays in eval mode (no dropout): the PPO ratio is then exactly 1 before the first
update, and the same seed gives the same rollouts.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from opid_train.policy.base import Generation, Policy


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def keep_head_and_tail(ids: list[int], limit: int) -> list[int]:
    """An over-long prompt cut to `limit` tokens, keeping its head (the task) and its tail (the current
    state); every backend cuts prompts this way (verl's own cap would keep only the tail)."""
    if len(ids) <= limit:
        return ids
    half = limit // 2
    return ids[:half] + ids[-(limit - half):]


class HFPolicy(Policy):
    def __init__(self, model, tokenizer, *, temperature: float = 1.0, max_prompt_tokens: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = temperature
        self._cache_name: str | None = None  # the forward's KV-cache keyword, found on first use
        # room for the response inside the model's context; capped so prompts stay affordable
        limit = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_prompt_tokens = max_prompt_tokens or min(limit - 64, 8192)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        eot = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        if eot is not None:
            self.eos_ids.add(eot)

    # -- prompts ----------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return keep_head_and_tail(self.tokenizer(text, add_special_tokens=False)["input_ids"], self.max_prompt_tokens)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, greedy: bool = False,
                 seed: int | None = None) -> list[Generation]:
        if not prompts:
            return []
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        ids, mask = self._left_pad(prompt_ids)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(0 if seed is None else seed)
        n = len(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        tokens = torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logps = torch.zeros((n, max_new_tokens), device=self.device)
        lengths = torch.full((n,), max_new_tokens, dtype=torch.long, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        next_pos = positions[:, -1]
        eos = torch.tensor(sorted(self.eos_ids), device=self.device) if self.eos_ids else None
        for t in range(max_new_tokens):
            logp_all = torch.log_softmax(out.logits[:, -1].float() / self.temperature, dim=-1)
            if greedy:
                tok = logp_all.argmax(-1)
            else:
                tok = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(-1)
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            tokens[:, t] = tok
            logps[:, t] = logp_all.gather(-1, tok[:, None]).squeeze(-1).masked_fill(done, 0.0)
            finished_now = ~done & torch.isin(tok, eos) if eos is not None else torch.zeros_like(done)
            lengths = torch.where(finished_now, torch.full_like(lengths, t + 1), lengths)
            done = done | finished_now
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
            next_pos = next_pos + 1
            out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                             use_cache=True, **self._cache_kwargs(out))
        results = []
        for i in range(n):
            resp = tokens[i, : int(lengths[i])].tolist()
            text = self.tokenizer.decode(resp, skip_special_tokens=True)
            results.append(Generation(text, prompt_ids[i], resp, logps[i, : len(resp)].tolist()))
        return results

    def _cache_kwargs(self, out) -> dict:
        """The KV cache to pass back: transformers 5 renamed `past_key_values` to `cache` (the old name
        warns and is to be removed in 5.40), 4.x knows only the old one."""
        if self._cache_name is None:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # LoRA
            self._cache_name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        return {self._cache_name: getattr(out, self._cache_name)}

    # -- scoring and training ---------------------------------------------------------------
    def logprobs(self, prompt_ids: list[list[int]], response_ids: torch.Tensor,
                 response_mask: torch.Tensor) -> torch.Tensor:
        response_ids = response_ids.to(self.device)
        response_mask = response_mask.to(self.device)
        p_ids, p_mask = self._left_pad(prompt_ids)
        resp_len = response_ids.shape[1]
        ids = torch.cat([p_ids, torch.where(response_mask > 0, response_ids, self.pad_id)], dim=1)
        mask = torch.cat([p_mask, response_mask.long()], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            logits_to_keep=resp_len + 1).logits[:, :-1].float()
        logp = torch.log_softmax(logits / self.temperature, dim=-1)
        token_logp = logp.gather(-1, response_ids[..., None]).squeeze(-1)
        return token_logp * response_mask

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    def load_weights(self, path: Path) -> None:
        """Load weights saved by `save` into this (same-architecture) model."""
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors weights in {path}")
        state = {}
        for f in files:
            state.update(load_file(str(f), device=str(self.device)))
        if hasattr(self.model, "peft_config"):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state)
        else:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {k for k in missing if "lm_head" in k}
            if set(missing) - tied or unexpected:
                raise ValueError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
