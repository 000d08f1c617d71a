"""laion-clap's own CLAP as a reference: build one offline with random weights, save it in its
checkpoint format, reload it with laion-clap's `load_ckpt`, embed audio and captions.

Run by tests/bridge/encode/test_laion_clap.py in a subprocess whose PYTHONPATH holds the
reference environment (`.venv/laion-clap-ref`, tests/laion-clap-reference.txt) and the
repository, so that nothing of it (the stand-in torchvision, laion-clap's `sys.path`
additions) reaches the test process:

    python tests/bridge/encode/laion_reference.py --workdir DIR [--fusion] [--amodel HTSAT-base]

writes DIR/clap.pt (the checkpoint), DIR/roberta-base (the text model laion-clap built on,
with its tokenizer) and DIR/reference.npz (waveforms, captions, laion-clap's embeddings).

How laion-clap is made to run offline here:
- torchvision: the registry's build cannot load beside the CPU torch, and laion-clap's CLAP
  path uses none of it but `torchvision.ops.misc.FrozenBatchNorm2d` (imported, used only to
  freeze a model for linear probes) and, for fused checkpoints and clips longer than 10 s,
  `torchvision.transforms.Resize` on a tensor. A stand-in package in sys.modules provides
  both: FrozenBatchNorm2d as torchvision defines it, Resize as bilinear interpolation without
  antialiasing (torchvision's tensor behaviour before 0.17, the releases laion-clap was
  trained with), everything else laion-clap imports as names that raise if used.
- the hub: laion-clap loads `roberta-base` (model and tokenizer), and its data module the
  `bert-base-uncased` and `facebook/bart-base` tokenizers, by name. from_pretrained takes an
  existing folder of that name in the working directory before the hub, so the script works
  in DIR, where it saves a small stand-in RoBERTa as `roberta-base` (hidden 768, which
  laion-clap's text projection hard-codes, one layer, a 261-token byte-level vocabulary) and
  the two tokenizers it never uses; HF_HUB_OFFLINE=1 guards the rest.
- weights: laion-clap's random initialisation, then every trained parameter and BatchNorm
  statistic perturbed (seeded), so that no weight keeps a value (1, 0) that would hide a
  misplaced tensor. The STFT and mel-filter weights stay as built: they are fixed constants
  in every checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 48_000
CAPTIONS = [
    "a dog barks",
    "rain on a tin roof",
    "x",
    # Longer than laion-clap's 77 tokens with the byte-level stand-in vocabulary: truncated.
    "a long caption about a train passing a level crossing while the bells ring and a dog "
    "barks in the distance",
]


def install_standin_torchvision() -> None:
    """Put a minimal `torchvision` (see module docstring) into sys.modules."""
    from transformers.utils import import_utils

    # transformers asks importlib whether torchvision exists (and caches the answer); a
    # module without a spec would make that raise, so ask before the stand-in goes in.
    assert not import_utils.is_torchvision_available()

    class FrozenBatchNorm2d(nn.Module):
        """BatchNorm2d with fixed statistics and affine parameters (torchvision.ops.misc)."""

        def __init__(self, num_features: int, eps: float = 1e-5) -> None:
            super().__init__()
            self.eps = eps
            self.register_buffer("weight", torch.ones(num_features))
            self.register_buffer("bias", torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    class Resize:
        """torchvision.transforms.Resize on a (C, H, W) tensor, bilinear, no antialiasing."""

        def __init__(self, size: list[int]) -> None:
            self.size = list(size)

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False)[0]

    def unused(name: str) -> type:
        def refuse(self: object, *args: object, **kwargs: object) -> None:
            raise NotImplementedError(f"stand-in torchvision: {name} is not on CLAP's path")

        return type(name, (), {"__init__": refuse})

    root = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")
    transforms = types.ModuleType("torchvision.transforms")
    datasets = types.ModuleType("torchvision.datasets")
    misc.FrozenBatchNorm2d = FrozenBatchNorm2d  # type: ignore[attr-defined]
    transforms.Resize = Resize  # type: ignore[attr-defined]
    for name in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor"):
        setattr(transforms, name, unused(name))
    transforms.CenterCrop = unused("CenterCrop")  # type: ignore[attr-defined]
    root.ops, ops.misc = ops, misc  # type: ignore[attr-defined]
    root.transforms, root.datasets = transforms, datasets  # type: ignore[attr-defined]
    for module in (root, ops, misc, transforms, datasets):
        sys.modules[module.__name__] = module


def build_standin_hub(workdir: Path) -> None:
    """`roberta-base` (model + tokenizer), `bert-base-uncased` and `facebook/bart-base`
    (tokenizers) as folders in `workdir` (see module docstring)."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    from bridge.bench.standins import _byte_vocab

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    roberta = workdir / "roberta-base"
    _byte_vocab(roberta, specials, word_end=False)
    tokenizer = RobertaTokenizer.from_pretrained(roberta)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,  # roberta-base's (RobertaConfig's default is 1e-12)
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(1)
    RobertaModel(config).save_pretrained(roberta)
    tokenizer.save_pretrained(roberta)
    _byte_vocab(workdir / "facebook" / "bart-base", specials, word_end=False)
    bert = workdir / "bert-base-uncased"
    bert.mkdir(exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (bert / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")


def perturb(model: nn.Module, seed: int) -> None:
    """Move every trained weight and BatchNorm statistic off its initial value (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "_extractor." in name or not tensor.is_floating_point() or name.endswith("mask"):
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif name.endswith("running_mean"):
                tensor.add_(0.1 * noise)
            elif tensor.ndim == 1:  # norm weights and biases
                tensor.add_(0.05 * noise)
            else:
                tensor.add_(0.02 * noise)


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """As laion-clap's training saves one (training/main.py): epoch, name, the DDP-wrapped
    model's state dict (`module.` keys) and the optimizer's state; plus RoBERTa's
    position_ids, which the transformers of the released checkpoints saved (load_ckpt
    deletes that key and fails when it is absent)."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514).expand((1, -1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    torch.save(
        {"epoch": 3, "name": "reference", "state_dict": state, "optimizer": optimizer.state_dict()},
        path,
    )


def quantised(wave: np.ndarray) -> np.ndarray:
    """`wave` on laion-clap's int16 grid, where its own int16 round trip changes nothing."""
    from laion_clap.training.data import float32_to_int16, int16_to_float32

    for _ in range(8):
        again = int16_to_float32(float32_to_int16(wave))
        if np.array_equal(again, wave):
            return wave
        wave = again
    raise AssertionError("int16 round trip did not settle")


def make_waves(fusion: bool) -> list[np.ndarray]:
    """Short, exact-window and (fused models) long clips: tones in noise, seeded."""
    rng = np.random.default_rng(7)
    seconds = [1.3, 10.0, 4.0]
    if fusion:
        # Longer than the window (three random crops + the whole), and the corner case that
        # is longer by less than a hop (one window, no fusion).
        seconds += [14.2, 10.0 + 200 / SAMPLE_RATE]
    waves = []
    for i, s in enumerate(seconds):
        n = round(s * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * np.pi * (220.0 * (i + 1)) * t) * np.exp(-0.1 * t)
        wave = (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
        waves.append(quantised(wave))
    return waves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--fusion", action="store_true")
    parser.add_argument("--amodel", default="HTSAT-tiny", help="laion-clap audio model name")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # hub names resolve to the stand-in folders here
    torch.set_num_threads(1)
    started = time.perf_counter()
    build_standin_hub(workdir)
    install_standin_torchvision()
    import laion_clap

    torch.manual_seed(0)
    built = laion_clap.CLAP_Module(enable_fusion=args.fusion, device="cpu", amodel=args.amodel)
    perturb(built.model, seed=3 if args.fusion else 2)
    checkpoint = workdir / "clap.pt"
    save_checkpoint(built.model, checkpoint)
    del built
    model = laion_clap.CLAP_Module(enable_fusion=args.fusion, device="cpu", amodel=args.amodel)
    model.load_ckpt(str(checkpoint), verbose=False)
    waves = make_waves(args.fusion)
    audio = []
    for wave in waves:
        # One clip per call, numpy's RNG seeded as the project seeds its fusion crops.
        np.random.seed(0)
        audio.append(model.get_audio_embedding_from_data(wave[None, :], use_tensor=False)[0])
    text = model.get_text_embedding(CAPTIONS, use_tensor=False)
    np.savez(
        workdir / "reference.npz",
        audio=np.stack(audio),
        text=text,
        captions=np.array(CAPTIONS),
        **{f"wave{i}": w for i, w in enumerate(waves)},
    )
    print(f"laion-clap reference built in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
