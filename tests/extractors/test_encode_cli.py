"""`vtr encode frames|audio|text`: shapes and throughput printed, one-line errors, exit codes."""
from __future__ import annotations

import subprocess

import pytest
import typer
from typer.testing import CliRunner

from extractors.ast_encoder import create_ast_encoder
from vtr.commands.encode import app, register

runner = CliRunner()
CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_media")
    for name, audio in (("a.mp4", True), ("b.mp4", False)):
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=4"]
        if audio:
            cmd += ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000"]
        cmd += ["-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        cmd += ["-c:a", "aac"] if audio else ["-an"]
        subprocess.run([*cmd, str(d / name)], check=True)
    (d / "list.txt").write_text("a.mp4\nbroken.mp4\n")
    (d / "broken.mp4").write_bytes(b"garbage")
    return d


def test_text_from_lines_and_csv(tmp_path):
    (tmp_path / "caps.txt").write_text("a dog runs\nsomeone is cooking\n")
    r = runner.invoke(app, ["text", str(tmp_path / "caps.txt"), "--random-init", *CPU])
    assert r.exit_code == 0, r.output
    assert "[0] caption_tokens (32, 512), caption_mask (32,), caption_embedding (512,) (5 tokens)" in r.output
    assert "caption: 2 items (0 failed)" in r.output and "rows/s" in r.output
    (tmp_path / "caps.csv").write_text("video_id,caption\nv1,a cat\n")
    r = runner.invoke(app, ["text", str(tmp_path / "caps.csv"), "--random-init", *CPU])
    assert r.exit_code == 0 and "caption: 1 items" in r.output


def test_frames_over_a_list_reports_failures_and_goes_on(media):
    r = runner.invoke(app, ["frames", str(media / "list.txt"), "--random-init", *CPU, "--batch-size", "4",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "[0] frame_features (12, 512), frame_mask (12,) (2 frames)" in r.output
    assert f"[1] FAILED {media / 'broken.mp4'}:" in r.output
    assert "frame: 2 items (1 failed), 2 frame rows" in r.output


def test_audio_with_hf_weights_directory(media, tmp_path):
    tiny = create_ast_encoder(random_init=True, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, device="cpu")
    tiny.model.save_pretrained(tmp_path / "ast")
    r = runner.invoke(app, ["audio", str(media), "--ast-weights", str(tmp_path / "ast"), *CPU, "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "AST (1 layers, 1214 tokens)" in r.output
    assert "audio_tokens (1214, 32), has_audio ()" in r.output
    assert "b.mp4: no audio stream" in r.output


def test_bad_input_exits_1_with_one_line(media, tmp_path):
    r = runner.invoke(app, ["frames", str(media)])
    assert r.exit_code == 1 and "--random-init" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["frames", str(tmp_path / "nowhere"), "--random-init"])
    assert r.exit_code == 1 and "no such file or folder" in r.output
    bad = tmp_path / "ViT-B-32.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = runner.invoke(app, ["text", str(media / "list.txt"), "--clip-weights", str(bad), *CPU])
    assert r.exit_code == 1 and str(bad) in r.output and "truncated or corrupt" in r.output
    r = runner.invoke(app, ["audio", str(media), "--ast-weights", str(bad), "--ast-sha256", "0" * 64])
    assert r.exit_code == 1 and "sha256 mismatch" in r.output


def test_registers_as_the_encode_group(tmp_path):
    root = typer.Typer()

    @root.command()
    def other() -> None:  # a second command keeps typer from collapsing the group
        pass

    register(root)
    r = runner.invoke(root, ["encode", "--help"])
    assert r.exit_code == 0 and "frames" in r.output and "audio" in r.output and "text" in r.output
