"""FlashAttention: exact attention through a memory-efficient kernel (Dao et al., "FlashAttention:
Fast and Memory-Efficient Exact Attention with IO-Awareness", NeurIPS 2022; FlashAttention-2, 2023).

The algorithm (never materialises the Lq×Lk score matrix):

    for each block Q_b of queries (B_r rows):                 running m (max), l (sum), O_b
        for each block K_c, V_c of keys (B_c rows):
            S = Q_b K_cᵀ / √Dh  (+ mask)                     (B_r, B_c), on chip only
            m' = max(m, rowmax S);  P = exp(S - m')
            l  = e^{m-m'} l + rowsum P;  O_b = e^{m-m'} O_b + P V_c;  m = m'
        O_b = O_b / l

Which kernel runs, in order of preference:
  1. the `flash-attn` package (`flash_attn_func`) on a CUDA device in fp16/bf16 without padding
     (import guarded: absent package -> next option);
  2. torch SDPA restricted to its flash / memory-efficient backends on CUDA;
  3. torch SDPA with its default choice elsewhere (on CPU that is
     `_scaled_dot_product_flash_attention_for_cpu`, a tiled online-softmax kernel).
`runtime_info()` reports which one ran (`kernel`) for the result record.

Memory O(Lq·Dh) per head; FLOPs are those of exact attention, 4·B·Lq·Lk·dim (QKᵀ and P·V), and
for causal self only the unmasked pairs, 4·B·dim·L(L+1)/2: the kernels skip the blocks above the
diagonal, and FlashAttention's papers count causal attention this way. Causal cross holds: queries
never interact. Reference: the dense masked form, `cab.ops.softmax_attention` with the same `allowed_mask`.
Decode form (causal self): a KV cache (2·dim·L numbers per example); a generated token's one query reads
the cache through SDPA (`flash_attn`'s kernel is for training-size query blocks), O(L·dim) per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import exact_attention_flops, kv_cache_size
from cab.ops import allowed_mask, sdpa_mask, softmax_attention

try:  # optional GPU package; its absence is normal on CPU machines
    from flash_attn import flash_attn_func as _flash_attn_func  # type: ignore
except Exception:  # noqa: BLE001 - ImportError, or a CUDA build mismatch raised at import
    _flash_attn_func = None

_SDPA_NAMES = {0: "sdpa_math", 1: "sdpa_flash", 2: "sdpa_efficient", 3: "sdpa_cudnn", 4: "sdpa_overrideable"}


@register_attention(
    "flash", patterns=set(Pattern),
    family="exact",
    paper={"title": "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
           "authors": "Dao et al.", "venue": "NeurIPS", "year": 2022, "url": "https://arxiv.org/abs/2205.14135"},
)
class FlashAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, dropout: float = 0.0):
        super().__init__(dim, num_heads, pattern)
        self.dropout = dropout
        self._kernel = "not run yet"

    def _use_flash_attn_package(self, q, key_padding_mask) -> bool:
        return (
            _flash_attn_func is not None
            and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16)
            and key_padding_mask is None
            and self.head_dim <= 256
            and self.head_dim % 8 == 0
        )

    def attend(self, q, k, v, key_padding_mask):
        p = self.dropout if self.training else 0.0
        if self._use_flash_attn_package(q, key_padding_mask):
            # flash_attn takes (B, L, H, Dh); causal only in self, where Lq == Lk (no alignment issue)
            out = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, causal=self.causal)
            self._kernel = "flash_attn"
            return out.transpose(1, 2)
        mask, is_causal = sdpa_mask(key_padding_mask, self.causal, q.shape[-2], k.shape[-2], q.device)
        if q.is_cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
            with sdpa_kernel(backends):
                self._kernel = self._sdpa_choice(q, k, v, mask, p, is_causal)
                try:
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
                except RuntimeError:
                    pass  # neither memory-efficient backend takes these inputs: fall through
        self._kernel = self._sdpa_choice(q, k, v, mask, p, is_causal)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)

    def reference_attend(self, q, k, v, key_padding_mask):
        return softmax_attention(q, k, v, allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], self.causal))

    @staticmethod
    def _sdpa_choice(q, k, v, mask, p, is_causal) -> str:
        try:
            return _SDPA_NAMES.get(int(torch._fused_sdp_choice(q, k, v, mask, p, is_causal)), "sdpa")
        except Exception:  # noqa: BLE001 - private API; the kernel name is informative only
            return "sdpa"

    def runtime_info(self) -> dict:
        return {"kernel": self._kernel, "flash_attn_installed": _flash_attn_func is not None}

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        return exact_attention_flops(batch, len_q, len_k, self.dim, self.causal)  # causal: unmasked pairs

    def skipped_masked_flops(self, batch: int, len_q: int, len_k: int) -> int:
        return exact_attention_flops(batch, len_q, len_k, self.dim, False) - self.core_flops(batch, len_q, len_k)

    def state_size(self, seq_len: int) -> int:
        return kv_cache_size(self.dim, seq_len)  # the KV cache of the decoding form

    # -- decode: a KV cache ------------------------------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x)

    def step(self, x_t, state):
        return self.kv_cache_step(x_t, state, lambda q, k, v: F.scaled_dot_product_attention(q, k, v))
