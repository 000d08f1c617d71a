"""Encoder towers (CLIP, CLAP), media decoding, embedding of files and captions."""
