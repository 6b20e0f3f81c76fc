"""Transformer models: a BERT-style encoder and a Vision Transformer."""

from __future__ import annotations

import math
from typing import Any, Optional

import onnx

from ._export import DEFAULT_OPSET, export, randomize_norm_stats, seed_all


def _torch_bert(vocab: int, hidden: int, depth: int, heads: int, max_pos: int, type_vocab: int) -> Any:
    """HuggingFace-BertModel-like encoder written out explicitly (so it exports the same way)."""
    import torch
    import torch.nn as nn

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads = heads
            self.head_dim = hidden // heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.dense = nn.Linear(hidden, hidden)

        def split(self, x: Any) -> Any:
            b, s, _ = x.size()
            return x.view(b, s, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

        def forward(self, x: Any, mask_bias: Any) -> Any:
            q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
            b, s = ctx.size(0), ctx.size(1)
            return self.dense(ctx.view(b, s, hidden))

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = SelfAttention()
            self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.intermediate = nn.Linear(hidden, 4 * hidden)
            self.act = nn.GELU()
            self.output = nn.Linear(4 * hidden, hidden)
            self.output_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.dropout = nn.Dropout(0.1)

        def forward(self, x: Any, mask_bias: Any) -> Any:
            x = self.attention_norm(x + self.dropout(self.attention(x, mask_bias)))
            return self.output_norm(x + self.dropout(self.output(self.act(self.intermediate(x)))))

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(max_pos, hidden)
            self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
            self.embeddings_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList([Layer() for _ in range(depth)])
            self.pooler = nn.Linear(hidden, hidden)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            seq = input_ids.size(1)
            pos = torch.arange(seq, dtype=torch.long, device=input_ids.device).unsqueeze(0)
            x = self.word_embeddings(input_ids) + self.position_embeddings(pos) \
                + self.token_type_embeddings(token_type_ids)
            x = self.embeddings_norm(x)
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, mask_bias)
            pooled = torch.tanh(self.pooler(x[:, 0]))
            return x, pooled

    return Bert()


def bert_encoder(hidden: int = 768, depth: int = 4, heads: int = 12, vocab: int = 30522, max_pos: int = 512,
                 type_vocab: int = 2, opset: int = DEFAULT_OPSET, seed: int = 0) -> onnx.ModelProto:
    """BERT-style encoder: word + position + token-type embeddings, LayerNorm, masked multi-head
    self-attention, GELU FFN, tanh pooler.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, seq]); outputs
    ``last_hidden_state`` [batch, seq, hidden] and ``pooler_output`` [batch, hidden].
    Batch and sequence are dynamic. Tests use e.g. ``hidden=32, heads=4, depth=2, vocab=100``.
    """
    import torch

    seed_all(seed)
    net = _torch_bert(vocab, hidden, depth, heads, max_pos, type_vocab)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.normal_(0.0, 0.02)  # BERT's initializer_range
    randomize_norm_stats(net, seed + 1)
    ids = torch.randint(0, vocab, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    types = torch.zeros(2, 7, dtype=torch.long)
    axes = {0: "batch", 1: "seq"}
    spec = {"input_ids": {"kind": "tokens", "high": vocab}, "attention_mask": {"kind": "mask"},
            "token_type_ids": {"kind": "tokens", "high": type_vocab}}
    return export(net, (ids, mask, types), input_names=["input_ids", "attention_mask", "token_type_ids"],
                  output_names=["last_hidden_state", "pooler_output"],
                  dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                "last_hidden_state": axes, "pooler_output": {0: "batch"}},
                  opset=opset, input_spec=spec, doc=f"zoo bert_encoder hidden={hidden} depth={depth}")


def _torch_vit(image_size: int, patch: int, hidden: int, depth: int, heads: int, num_classes: int) -> Any:
    """torchvision-VisionTransformer-like model (nn.MultiheadAttention, pre-norm blocks)."""
    import torch
    import torch.nn as nn

    class EncoderBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
            self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(0.0),
                                     nn.Linear(4 * hidden, hidden), nn.Dropout(0.0))

        def forward(self, x: Any) -> Any:
            y = self.ln_1(x)
            y, _ = self.self_attention(y, y, y, need_weights=False)
            x = x + y
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n_patches = (image_size // patch) ** 2
            self.conv_proj = nn.Conv2d(3, hidden, patch, patch)
            self.class_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
            self.pos_embedding = nn.Parameter(torch.randn(1, n_patches + 1, hidden) * 0.02)
            self.layers = nn.Sequential(*[EncoderBlock() for _ in range(depth)])
            self.ln = nn.LayerNorm(hidden, eps=1e-6)
            self.head = nn.Linear(hidden, num_classes)

        def forward(self, x: Any) -> Any:
            n = x.shape[0]
            x = self.conv_proj(x).reshape(n, hidden, -1).permute(0, 2, 1)
            x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
            x = self.ln(self.layers(x))
            return self.head(x[:, 0])

    return ViT()


def vit(image_size: int = 224, patch: int = 16, hidden: int = 768, depth: int = 12, heads: int = 12,
        num_classes: int = 1000, opset: int = DEFAULT_OPSET, seed: int = 0,
        width: Optional[int] = None) -> onnx.ModelProto:
    """Vision Transformer: patch-embedding Conv, class token, position embedding, pre-norm
    encoder blocks (``nn.MultiheadAttention``, GELU MLP), final LayerNorm and a linear head.

    Defaults are ViT-B/16. ``width`` is an alias of ``hidden``. Dynamic batch; fixed image size.
    """
    import torch

    if width is not None:
        hidden = width
    seed_all(seed)
    net = _torch_vit(image_size, patch, hidden, depth, heads, num_classes)
    randomize_norm_stats(net, seed + 1)
    x = torch.randn(1, 3, image_size, image_size)
    return export(net, (x,), input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset=opset,
                  input_spec={"input": {"kind": "image"}}, doc=f"zoo vit hidden={hidden} depth={depth}")


__all__ = ["bert_encoder", "vit"]
