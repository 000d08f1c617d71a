"""`mbridge`: the engine's stages as subcommands joined by files.

embed -> .npy -> train -> checkpoint dir -> project / eval; `import-checkpoint`, the authors'
released projectors as a checkpoint dir; and `retrain`, the service's retrain pipeline on a
data directory. Each subcommand is a thin wrapper
over a library function; `main(argv)` is callable in-process from tests. Errors the user can fix
print one line `error: ...` to stderr and exit 2; no partial output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from bridge.errors import BridgeError, InvalidInputError
from bridge.types import DEVICE_NAMES, RETRAIN_INITS, BackendName, IndexType
from bridge.types import ServiceConfig as ServiceDefaults

INDEX_TYPES = get_args(IndexType)
BACKENDS = get_args(BackendName)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="encode captions, images or audio with a CLIP or CLAP tower")
    p.add_argument("--encoder", required=True, choices=["clip", "clap"])
    p.add_argument("--model", required=True, help="hub id or local Hugging Face folder")
    p.add_argument("--modality", required=True, choices=["text", "image", "audio"])
    p.add_argument("--input", required=True, type=Path, help="captions file, folder, or path list")
    p.add_argument("--output", required=True, type=Path, help="output .npy (float32, N x D)")
    p.add_argument("--device", default="auto", help=DEVICE_NAMES)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=_cmd_embed)


# `mbridge train`'s projector flags (by dest) when neither they nor --init-from give them.
_SHAPE_DEFAULTS: dict[str, Any] = {
    "mode": "cmcr",
    "hidden_dim": 1024,
    "shared_dim": 512,
    "layers": 2,
    "batchnorm_mode": "joint",
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    from bridge.model.config import BRIDGE_MODES, PRECISIONS, SelectEpoch, TrainConfig

    d = TrainConfig()  # the CLI's defaults are the library's defaults
    p = sub.add_parser(
        "train",
        help="train a bridge on caption pairs (C-MCR projectors, or the Ex-MCR head)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clip-text", required=True, type=Path, help="(N, D_clip) caption embeddings")
    p.add_argument("--clap-text", required=True, type=Path, help="(N, D_clap); row i = row i")
    p.add_argument("--image-memory", type=Path, help="unpaired CLIP image embeddings (M, D_clip)")
    p.add_argument("--audio-memory", type=Path, help="unpaired CLAP audio embeddings (M, D_clap)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument(
        "--init-from",
        type=Path,
        metavar="DIR",
        help="a bridge folder (trained or imported) whose weights training starts from instead "
        "of a fresh initialisation; its shape, mode, BatchNorm mode and encoders are the "
        "defaults of the flags below, and a flag that changes its shape is refused",
    )
    p.add_argument(
        "--mode",
        choices=BRIDGE_MODES,
        default=argparse.SUPPRESS,
        help="cmcr: two projectors into a new shared space; exmcr: CLIP stays the shared space "
        "and one head maps CLAP into it (--shared-dim is then CLIP's width) (default: cmcr, "
        "or the --init-from bridge's)",
    )
    p.add_argument("--loss", choices=["infonce", "cwcl"], default=d.loss)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help=DEVICE_NAMES)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="matrix products of projectors and logits (auto: bf16 where the device has it)",
    )
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--learn-temperature", action="store_true", help="learn the logit scale")
    p.add_argument("--memory-temperature", type=float, default=d.memory_temperature)
    p.add_argument(
        "--memory-top-k", type=int, default=d.memory_top_k, help="0 = exact softmax over memory"
    )
    p.add_argument("--noise-variance", type=float, default=d.noise_variance)
    p.add_argument("--intra-weight", type=float, default=d.intra_weight)
    p.add_argument("--no-memory", action="store_true", help="ablation: skip memory retrieval")
    p.add_argument("--no-noise", action="store_true", help="ablation: skip semantic completion")
    p.add_argument("--no-intra", action="store_true", help="ablation: skip intra-MCR alignment")
    p.add_argument("--cwcl-reverse", choices=["infonce", "cwcl"], default="infonce")
    p.add_argument("--cwcl-weights", choices=["clip", "clap", "mean"], default="mean")
    p.add_argument(
        "--cwcl-sharpen", type=float, default=d.cwcl_sharpen, help="power on the CWCL weights"
    )
    # Defaults shown by hand: SUPPRESS tells a flag given from one left out (--init-from).
    p.add_argument(
        "--batchnorm-mode",
        choices=["joint", "separate"],
        default=argparse.SUPPRESS,
        help="(default: joint, or the --init-from bridge's)",
    )
    for flag in ("--hidden-dim", "--shared-dim", "--layers"):
        default = _SHAPE_DEFAULTS[flag[2:].replace("-", "_")]
        help_text = f"(default: {default}, or the --init-from bridge's)"
        p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=help_text)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument(
        "--select-epoch",
        choices=list(get_args(SelectEpoch)),
        default=d.select_epoch,
        help="keep the last epoch, or the best by this validation signal",
    )
    dev = p.add_argument_group(
        "labelled dev set",
        "images and clips with labels, never trained on: the trainer reports their class-level "
        "audio->image and image->audio P@1 across the bridge every epoch (val_dev_p_at_1, "
        "usable with --select-epoch); give all four",
    )
    dev.add_argument("--dev-image", type=Path, help="CLIP image embeddings (N, D_clip) .npy")
    dev.add_argument("--dev-image-labels", type=Path, help="one label per line, row i = line i")
    dev.add_argument("--dev-audio", type=Path, help="CLAP audio embeddings (M, D_clap) .npy")
    dev.add_argument("--dev-audio-labels", type=Path, help="one label per line, row i = line i")
    p.add_argument(
        "--clip-model",
        default="",
        help="recorded in config.json: CLIP encoder id (empty: the --init-from bridge's)",
    )
    p.add_argument(
        "--clap-model",
        default="",
        help="recorded in config.json: CLAP encoder id (empty: the --init-from bridge's)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _add_project(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="map raw embeddings into the shared space")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--space", required=True, choices=["clip", "clap"])
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.set_defaults(func=_cmd_project)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="audio<->image retrieval metrics through a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path, help="raw CLIP image embeddings")
    p.add_argument("--audio", required=True, type=Path, help="raw CLAP audio embeddings")
    p.add_argument("--labels", type=Path, help="labels for both sides (same row count)")
    p.add_argument("--image-labels", type=Path, help="labels of the image rows")
    p.add_argument("--audio-labels", type=Path, help="labels of the audio rows")
    p.add_argument("--json", type=Path, help="write the metrics here")
    p.set_defaults(func=_cmd_eval)


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="train a new bridge version of a service's data directory (server stopped)",
        description=(
            "The admin endpoint's retrain pipeline, run in the foreground on a data directory "
            "no server is using: encode the captions with both text towers, train, re-project "
            "every stored item into the new version's indexes, evaluate, and (with --activate) "
            "make it the active version. Memories default to the stored items' embeddings."
        ),
    )
    p.add_argument("--data-dir", required=True, type=Path, help="the service's BRIDGE_DATA_DIR")
    p.add_argument("--captions", required=True, type=Path, help="UTF-8, one caption per line")
    p.add_argument("--image-memory", type=Path, help=".npy (N, D_clip) CLIP image embeddings")
    p.add_argument("--audio-memory", type=Path, help=".npy (N, D_clap) CLAP audio embeddings")
    p.add_argument(
        "--overrides", default="{}", help="JSON object of training fields, e.g. '{\"epochs\": 5}'"
    )
    p.add_argument("--activate", action="store_true", help="activate the version when ready")
    p.add_argument(
        "--init",
        choices=RETRAIN_INITS,
        default="fresh",
        help="fresh weights, or 'active': start from the active version's weights (a warm "
        "start; it keeps that version's projector shape and mode)",
    )
    p.add_argument(
        "--clip-model",
        default=os.environ.get("BRIDGE_CLIP_MODEL", ServiceDefaults.clip_model),
        help="the CLIP encoder the service runs (default: $BRIDGE_CLIP_MODEL or the demo tower)",
    )
    p.add_argument(
        "--clap-model",
        default=os.environ.get("BRIDGE_CLAP_MODEL", ServiceDefaults.clap_model),
        help="the CLAP encoder the service runs (default: $BRIDGE_CLAP_MODEL or the demo tower)",
    )
    p.add_argument("--device", default=os.environ.get("BRIDGE_DEVICE", "auto"), help=DEVICE_NAMES)
    p.add_argument(
        "--index-type",
        choices=INDEX_TYPES,
        default=os.environ.get("BRIDGE_INDEX_TYPE", ServiceDefaults.index_type),
        help="the service's index kind (default: $BRIDGE_INDEX_TYPE or flat)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("BRIDGE_BACKEND", ServiceDefaults.backend),
        help="the service's vector backend (default: $BRIDGE_BACKEND or faiss)",
    )
    p.add_argument(
        "--milvus-uri",
        default=os.environ.get("BRIDGE_MILVUS_URI", ServiceDefaults.milvus_uri),
        help="with --backend milvus: the service's Milvus (default: $BRIDGE_MILVUS_URI, or "
        "Milvus Lite in the data directory); the token comes from $BRIDGE_MILVUS_TOKEN",
    )
    p.add_argument(
        "--milvus-db",
        default=os.environ.get("BRIDGE_MILVUS_DB", ServiceDefaults.milvus_db),
        help="with --backend milvus: the Milvus database (default: $BRIDGE_MILVUS_DB)",
    )
    p.add_argument("--json", type=Path, help="write the version and its metrics here")
    p.set_defaults(func=_cmd_retrain)


def _add_import(sub: argparse._SubParsersAction) -> None:
    from bridge.model.imports import IMPORT_KINDS, PUBLISHED_CLAP, PUBLISHED_CLIP

    p = sub.add_parser(
        "import-checkpoint",
        help="turn the authors' released C-MCR or Ex-MCR projector into a bridge folder",
        description=(
            "Convert a released projector file (C-MCR checkpoints/clap_clip.pt, Ex-MCR "
            "checkpoints/ex_clap.pt) into a bridge folder (config.json, weights.safetensors, "
            "report.json, README.md) that the service and every command use like a trained one. "
            "The file is read with torch.load(weights_only=True) and checked key by key; a "
            "refused file leaves --out untouched. docs/published-model.md: from download to serve."
        ),
    )
    p.add_argument(
        "--kind",
        required=True,
        choices=IMPORT_KINDS,
        help="cmcr: CLAPCLIP_Head (clap_clip.pt); exmcr: Ex_MCR_Head (ex_clap.pt)",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="the released .pt file")
    p.add_argument("--out", required=True, type=Path, help="bridge folder to write")
    p.add_argument(
        "--clip",
        default=None,
        help=f"CLIP encoder id to record (default: {PUBLISHED_CLIP}, the published one)",
    )
    p.add_argument(
        "--clap",
        default=None,
        help=f"CLAP encoder id to record (default: {PUBLISHED_CLAP}, the published LAION-CLAP "
        "checkpoint; matches a file of that name)",
    )
    p.set_defaults(func=_cmd_import)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from bridge.bench import BENCHMARKS

    listing = "\n".join(f"  {b.name:<18}{b.summary}" for b in BENCHMARKS.values())
    p = sub.add_parser(
        "bench",
        help="benchmarks: each prints a table and writes JSON with --json",
        description="Run one benchmark; `mbridge bench NAME --help` shows its options.",
        epilog="benchmarks:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", choices=list(BENCHMARKS), help="see the list below")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark")
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbridge", description="Connect CLIP and CLAP spaces with C-MCR, stage by stage."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (_add_embed, _add_train, _add_project, _add_eval, _add_retrain, _add_import)
    for add in (*commands, _add_bench):
        add(sub)
    return parser


def _cmd_embed(args: argparse.Namespace) -> int:
    from bridge.encode.embed import run_embed

    rows = run_embed(
        args.encoder,
        args.model,
        args.modality,
        args.input,
        args.output,
        args.device,
        args.batch_size,
    )
    print(f"wrote {rows} embeddings to {args.output}")
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from bridge.model.config import TrainConfig, from_dict

    # A flag named as a TrainConfig field sets that field; these five are spelled otherwise.
    return from_dict(
        TrainConfig,
        {
            **vars(args),
            "use_memory": not args.no_memory,
            "use_noise": not args.no_noise,
            "use_intra": not args.no_intra,
            "cwcl_weight_source": args.cwcl_weights,
            "progress": not args.quiet,
        },
    )


def _dev_set(args: argparse.Namespace) -> Any:
    """The labelled dev set of `mbridge train`, or None when no --dev-* flag is given."""
    import numpy as np

    from bridge.arrays import load_matrix
    from bridge.io import read_captions
    from bridge.model.validation import DevSet

    flags = ("dev_image", "dev_image_labels", "dev_audio", "dev_audio_labels")
    given = [f for f in flags if getattr(args, f) is not None]
    if not given:
        return None
    if len(given) != len(flags):
        missing = ", ".join("--" + f.replace("_", "-") for f in flags if f not in given)
        raise InvalidInputError(f"a dev set needs all four --dev-* flags; missing {missing}")
    return DevSet(
        image=load_matrix(args.dev_image, "--dev-image"),
        image_labels=np.array(read_captions(args.dev_image_labels, what="--dev-image-labels")),
        audio=load_matrix(args.dev_audio, "--dev-audio"),
        audio_labels=np.array(read_captions(args.dev_audio_labels, what="--dev-audio-labels")),
    )


def _warm_start(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """(InitialWeights or None, projector flag values, encoder ids) of `mbridge train`: the
    flags given, else the --init-from bridge's values, else _SHAPE_DEFAULTS."""
    defaults, encoders = dict(_SHAPE_DEFAULTS), {}
    init = None
    if args.init_from is not None:
        from bridge.model.projectors import load_checkpoint
        from bridge.model.trainer import InitialWeights

        checkpoint = load_checkpoint(args.init_from)
        init = InitialWeights.from_checkpoint(checkpoint, str(args.init_from))
        base = checkpoint.projector_config
        defaults = {
            "mode": base.mode,
            "hidden_dim": base.hidden_dim,
            "shared_dim": base.shared_dim,
            "layers": base.num_layers,
            "batchnorm_mode": "separate" if base.text_norms else "joint",
        }
        encoders = dict(checkpoint.encoders)
    shape = {name: getattr(args, name, default) for name, default in defaults.items()}
    given = {"clip": args.clip_model, "clap": args.clap_model}
    encoders.update({k: v for k, v in given.items() if v})
    return init, shape, {k: v for k, v in encoders.items() if v}


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bridge.arrays import load_matrix
    from bridge.model.config import ProjectorConfig
    from bridge.model.trainer import train_bridge

    init, shape, encoders = _warm_start(args)
    config = replace(_train_config(args), batchnorm_mode=shape["batchnorm_mode"])
    clip_text = load_matrix(args.clip_text, "--clip-text")
    clap_text = load_matrix(args.clap_text, "--clap-text")
    image_memory = load_matrix(args.image_memory, "--image-memory") if args.image_memory else None
    audio_memory = load_matrix(args.audio_memory, "--audio-memory") if args.audio_memory else None
    projector = ProjectorConfig(
        clip_dim=clip_text.shape[1],
        clap_dim=clap_text.shape[1],
        hidden_dim=shape["hidden_dim"],
        shared_dim=shape["shared_dim"],
        num_layers=shape["layers"],
        mode=shape["mode"],
    )
    result = train_bridge(
        clip_text,
        clap_text,
        image_memory,
        audio_memory,
        config,
        projector,
        out_dir=args.out,
        encoders=encoders,
        dev=_dev_set(args),
        init=init,
    )
    for warning in result.report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    final = result.report["final"]
    keys = ("loss", "val_mean_r_at_1", "val_pseudo_audio_to_image_map", "val_dev_p_at_1")
    shown = ", ".join(f"{k}={final[k]:.4f}" for k in keys if k in final)
    steps = f"{result.report['mode']}, {result.report['steps']} steps"
    print(f"wrote checkpoint {args.out} ({steps}, {shown})")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    from bridge.arrays import atomic_save_npy, load_matrix
    from bridge.model.projectors import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    vectors = load_matrix(args.input, "--input", checkpoint.input_dim(args.space))
    projected = checkpoint.project(args.space, vectors)
    atomic_save_npy(args.output, projected)
    print(f"wrote {projected.shape[0]} x {projected.shape[1]} shared embeddings to {args.output}")
    return 0


def _load_labels(path: Path | None, rows: int, name: str) -> Any:
    from bridge.arrays import load_npy

    if path is None:
        return None
    labels = load_npy(path, name)
    if labels.ndim != 1 or len(labels) != rows:
        raise InvalidInputError(f"{name}: expected 1-D array of {rows} labels, got {labels.shape}")
    return labels


def _cmd_eval(args: argparse.Namespace) -> int:
    from bridge.arrays import load_matrix
    from bridge.model.evaluation import cross_modal_metrics
    from bridge.model.projectors import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    image = load_matrix(args.image, "--image", checkpoint.input_dim("clip"))
    audio = load_matrix(args.audio, "--audio", checkpoint.input_dim("clap"))
    if args.labels is not None and (args.image_labels or args.audio_labels):
        raise InvalidInputError("give --labels, or --image-labels and --audio-labels, not both")
    image_labels = _load_labels(args.labels or args.image_labels, len(image), "image labels")
    audio_labels = _load_labels(args.labels or args.audio_labels, len(audio), "audio labels")
    shared_image = checkpoint.project("clip", image)
    shared_audio = checkpoint.project("clap", audio)
    metrics = cross_modal_metrics(shared_image, shared_audio, image_labels, audio_labels)
    print(f"{'direction':<16}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'mAP':>8}{'medR':>8}")
    for direction, m in metrics.items():
        print(
            f"{direction:<16}{m['r_at_1']:>8.4f}{m['r_at_5']:>8.4f}{m['r_at_10']:>8.4f}"
            f"{m['map']:>8.4f}{m['median_rank']:>8.1f}"
        )
    if args.json:
        from bridge.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(metrics, indent=2) + "\n")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from bridge.service.offline import retrain_offline

    result = retrain_offline(
        data_dir=args.data_dir,
        captions=args.captions,
        image_memory=args.image_memory,
        audio_memory=args.audio_memory,
        overrides=args.overrides,
        activate=args.activate,
        init=args.init,
        clip_model=args.clip_model,
        clap_model=args.clap_model,
        device=args.device,
        vectors={
            "index_type": args.index_type,
            "backend": args.backend,
            "milvus_uri": args.milvus_uri,
            "milvus_token": os.environ.get("BRIDGE_MILVUS_TOKEN", ""),
            "milvus_db": args.milvus_db,
            # The store, when the service keeps it on PostgreSQL (replicas on several hosts).
            "database_url": os.environ.get("BRIDGE_DATABASE_URL", ""),
        },
    )
    print(f"version {result['version']} ready{' and active' if args.activate else ''}")
    if args.json:
        from bridge.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from bridge.model.imports import import_checkpoint
    from bridge.model.projectors import load_checkpoint

    out = import_checkpoint(args.kind, args.checkpoint, args.out, args.clip, args.clap)
    checkpoint = load_checkpoint(out)
    config = checkpoint.projector_config
    print(
        f"wrote bridge {out} ({args.kind}: {config.clip_dim}-d CLIP, {config.clap_dim}-d CLAP -> "
        f"{config.shared_dim}-d shared; encoders clip={checkpoint.encoders['clip']}, "
        f"clap={checkpoint.encoders['clap']})"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bridge.bench import run

    return run(args.name, args.args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
