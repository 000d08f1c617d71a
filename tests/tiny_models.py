"""Tiny, seeded CLIP and CLAP models saved in Hugging Face format, for tests.

Recipe (docs/development.md): a byte-level BPE vocabulary with no
merges (every byte is its own token), tiny transformer configs, and `save_pretrained` of the
model together with its processor. The folders load back through the same `from_pretrained`
path that real hub checkpoints use, with HF_HUB_OFFLINE=1.

Weights are deterministic: each builder seeds torch before constructing the model, so two
builds of the same model produce identical weights (and thus identical embeddings).

Public helpers (stable; other tests depend on them):
    build_tiny_clip(out_dir) -> Path     # CLIP: text + image, dim TINY_CLIP_DIM
    build_tiny_clap(out_dir) -> Path     # CLAP: text + audio (48 kHz), dim TINY_CLAP_DIM
"""

from __future__ import annotations

import json
from pathlib import Path

# GPT-2's reversible byte -> printable unicode map (the alphabet of byte-level BPE).
from transformers.convert_slow_tokenizer import bytes_to_unicode

TINY_CLIP_DIM = 16
TINY_CLAP_DIM = 16
TINY_CLAP_SAMPLE_RATE = 48_000
_SEED = 1234


def _write_byte_vocab(folder: Path, specials: list[str], with_word_end: bool) -> tuple[Path, Path]:
    """Write vocab.json (specials, 256 byte chars [+ `</w>` forms]) and an empty merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens: list[str] = list(specials)
    byte_chars = list(bytes_to_unicode().values())
    tokens += byte_chars
    if with_word_end:
        tokens += [c + "</w>" for c in byte_chars]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_path, merges_path


def build_tiny_clip(out_dir: str | Path) -> Path:
    """Build a ~100k-parameter CLIPModel + CLIPProcessor and save them to `out_dir`.

    Text: hidden 32, 2 layers, 4 heads, byte-level vocab. Vision: image 32, patch 8,
    hidden 32, 2 layers. Projection dim 16. Returns `out_dir`.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    out = Path(out_dir)
    tok_dir = out / "_tokenizer_src"
    _write_byte_vocab(tok_dir, ["<|startoftext|>", "<|endoftext|>"], with_word_end=True)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=32)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=TINY_CLIP_DIM,
    )
    torch.manual_seed(_SEED)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _remove_tree(tok_dir)
    return out


def build_tiny_clap(out_dir: str | Path) -> Path:
    """Build a tiny ClapModel (unfused HTSAT) + ClapProcessor and save them to `out_dir`.

    Audio: 48 kHz, 16 mel bins, spec_size 64 (ratio 4, as HTSAT requires), patch 4,
    window 4, depths [1, 1], 1 s clips (100 frames <= 256). Text: RoBERTa hidden 32,
    2 layers, byte-level vocab. Projection dim 16. Returns `out_dir`.
    """
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    out = Path(out_dir)
    tok_dir = out / "_tokenizer_src"
    _write_byte_vocab(tok_dir, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], with_word_end=False)
    tokenizer = RobertaTokenizer.from_pretrained(tok_dir, model_max_length=32)
    feature_extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=TINY_CLAP_SAMPLE_RATE,
        max_length_s=1,
        hop_length=480,
        fft_window_size=1024,
        truncation="rand_trunc",
    )
    text_config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
        projection_dim=TINY_CLAP_DIM,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    audio_config = ClapAudioConfig(
        spec_size=64,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=[4, 4],
        window_size=4,
        depths=[1, 1],
        num_attention_heads=[2, 4],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        projection_dim=TINY_CLAP_DIM,
        enable_fusion=False,
    )
    config = ClapConfig(
        text_config=text_config.to_dict(),
        audio_config=audio_config.to_dict(),
        projection_dim=TINY_CLAP_DIM,
    )
    torch.manual_seed(_SEED)
    model = ClapModel(config).eval()
    processor = ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _remove_tree(tok_dir)
    return out


def _remove_tree(folder: Path) -> None:
    """Delete the scratch tokenizer folder (the processor saved its own copy)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
