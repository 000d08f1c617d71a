"""bridge.encode.embed: caption files, media folders and path lists -> .npy (the `embed` stage)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from media_factory import make_image_bytes, make_wav_bytes

from bridge.encode.embed import embed_inputs, list_media_paths, run_embed
from bridge.encode.encoders import Encoder
from bridge.encode.media import decode_audio, decode_image
from bridge.errors import (
    InvalidInputError,
    MediaDecodeError,
    ModelLoadError,
    NotFoundError,
    UnsupportedMediaError,
)

CAPTIONS = ["a dog barks", "rain on a roof", "seven", "a red square", "zero", "a cat"]


def _image_folder(folder: Path, n: int = 5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fmts = ["PNG", "JPEG", "BMP", "WEBP", "GIF"]
    paths = []
    for i in range(n):
        fmt = fmts[i % len(fmts)]
        path = folder / f"img_{i:02d}.{fmt.lower()}"
        path.write_bytes(make_image_bytes(20 + i, 24, fmt=fmt, seed=i))
        paths.append(path)
    return paths


def _audio_folder(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = [(0.4, 8000, 300.0), (0.2, 16_000, 600.0), (0.3, 48_000, 900.0)]
    paths = []
    for i, (seconds, rate, freq) in enumerate(specs):
        path = folder / f"clip_{i}.wav"
        path.write_bytes(make_wav_bytes(seconds, rate, freq))
        paths.append(path)
    return paths


# -- captions --------------------------------------------------------------------------
def test_list_folder_sorted_and_filtered(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = _image_folder(folder, 3)
    (folder / "readme.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(make_image_bytes())
    (folder / "sub").mkdir()
    (folder / "UPPER.PNG").write_bytes(make_image_bytes())
    assert list_media_paths(folder, "image") == sorted(
        [*paths, folder / "UPPER.PNG"], key=lambda p: p.name
    )
    with pytest.raises(InvalidInputError, match="holds no audio files"):
        list_media_paths(folder, "audio")


def test_list_file_with_relative_and_absolute_paths(tmp_path: Path) -> None:
    paths = _audio_folder(tmp_path / "data" / "wavs")
    listing = tmp_path / "data" / "list.txt"
    listing.write_text(
        f"# audio list\nwavs/{paths[2].name}\n\n{paths[0]}\n  wavs/{paths[1].name}  \n",
        encoding="utf-8",
    )
    assert list_media_paths(listing, "audio") == [paths[2], paths[0], paths[1]]
    assert list_media_paths(paths[1], "audio") == [paths[1]]  # a single media file


def test_list_errors(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav\nmissing.wav\n", encoding="utf-8")
    (tmp_path / "a.wav").write_bytes(make_wav_bytes(0.1, 8000))
    with pytest.raises(NotFoundError, match="list.txt line 2: file not found: .*missing.wav"):
        list_media_paths(listing, "audio")
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="names no image files"):
        list_media_paths(comments, "image")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InvalidInputError, match="not text"):
        list_media_paths(binary, "image")
    with pytest.raises(NotFoundError, match="input not found"):
        list_media_paths(tmp_path / "nope", "image")
    with pytest.raises(InvalidInputError, match="must be image or audio"):
        list_media_paths(tmp_path, "text")


# -- embedding ---------------------------------------------------------------------------
def test_embed_text_rows_follow_lines(tmp_path: Path, tiny_clip_encoder: Encoder) -> None:
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    out = embed_inputs(tiny_clip_encoder, "text", path, batch_size=4)
    np.testing.assert_allclose(out, tiny_clip_encoder.encode_text(CAPTIONS), atol=1e-5)


def test_embed_images_from_folder(tmp_path: Path, tiny_clip_encoder: Encoder) -> None:
    paths = _image_folder(tmp_path / "imgs", 5)
    out = embed_inputs(tiny_clip_encoder, "image", tmp_path / "imgs", batch_size=2)
    expected = tiny_clip_encoder.encode_image([decode_image(p.read_bytes()) for p in paths])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_embed_audio_mixed_rates(tmp_path: Path, tiny_clap_encoder: Encoder) -> None:
    paths = _audio_folder(tmp_path / "wavs")
    out = embed_inputs(tiny_clap_encoder, "audio", tmp_path / "wavs")
    assert out.shape == (3, tiny_clap_encoder.dim)
    for row, path in zip(out, paths, strict=True):
        wave, rate = decode_audio(path.read_bytes())
        np.testing.assert_allclose(row, tiny_clap_encoder.encode_audio([wave], rate)[0], atol=1e-5)


def test_embed_wrong_modality(tmp_path: Path, tiny_clap_encoder: Encoder) -> None:
    _image_folder(tmp_path / "imgs", 1)
    with pytest.raises(UnsupportedMediaError, match="a clap encoder cannot embed image"):
        embed_inputs(tiny_clap_encoder, "image", tmp_path / "imgs")
    with pytest.raises(InvalidInputError, match="modality must be one of"):
        embed_inputs(tiny_clap_encoder, "video", tmp_path / "imgs")


def test_progress_bar_goes_to_stderr(
    tmp_path: Path, tiny_clip_encoder: Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS), encoding="utf-8")
    embed_inputs(tiny_clip_encoder, "text", path, batch_size=2)
    captured = capsys.readouterr()
    assert "embed text" in captured.err and "6/6" in captured.err
    assert captured.out == ""
    embed_inputs(tiny_clip_encoder, "text", path, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


# -- run_embed (the `mbridge embed` command) ----------------------------------------------
def test_run_embed_writes_npy(
    tmp_path: Path, tiny_clap_dir: Path, tiny_clap_encoder: Encoder
) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS), encoding="utf-8")
    out = tmp_path / "out" / "clap_text.npy"
    rows = run_embed("clap", str(tiny_clap_dir), "text", captions, out, device="cpu")
    assert rows == len(CAPTIONS)
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == (len(CAPTIONS), tiny_clap_encoder.dim)
    np.testing.assert_allclose(saved, tiny_clap_encoder.encode_text(CAPTIONS), atol=1e-5)
    assert [p.name for p in out.parent.iterdir()] == ["clap_text.npy"]  # no temp files left

    _audio_folder(tmp_path / "wavs")
    audio_out = tmp_path / "clap_audio.npy"
    assert run_embed("clap", tiny_clap_dir, "audio", tmp_path / "wavs", audio_out, "cpu") == 3
    assert np.load(audio_out).shape == (3, tiny_clap_encoder.dim)


def test_run_embed_failures_leave_no_output(
    tmp_path: Path,
    tiny_clip_dir: Path,
    make_png_bytes: Callable[..., bytes],
) -> None:
    out = tmp_path / "out.npy"
    folder = tmp_path / "imgs"
    _image_folder(folder, 2)
    (folder / "img_99.png").write_bytes(b"this is text pretending to be a PNG")
    with pytest.raises(MediaDecodeError, match="img_99.png: named as image"):
        run_embed("clip", tiny_clip_dir, "image", folder, out, device="cpu", batch_size=2)
    with pytest.raises(UnsupportedMediaError, match="a clip encoder cannot embed audio"):
        run_embed("clip", tiny_clip_dir, "audio", folder, out, device="cpu")
    # the input is checked before the model is loaded: a missing input wins over a bad model
    with pytest.raises(NotFoundError, match="nothing.txt"):
        run_embed("clip", tmp_path / "no-model", "text", tmp_path / "nothing.txt", out)
    (folder / "img_99.png").write_bytes(make_png_bytes())
    with pytest.raises(ModelLoadError, match="model folder not found"):
        run_embed("clip", tmp_path / "no-model", "image", folder, out, device="cpu")
    assert not out.exists()
    assert run_embed("clip", tiny_clip_dir, "image", folder, out, device="cpu") == 3
