"""`vtr ablate` and `vtr eval --style-shift` on a store the extraction flow wrote."""
import json

from typer.testing import CliRunner

from vtr.cli import app

runner = CliRunner()
TINY = ["--set", "n_heads=4", "--set", "temporal_layers=1", "--set", "resampler_layers=1",
        "--set", "fusion_layers=1", "--set", "gate_hidden=16"]


def test_ablate_prints_its_table_on_an_extracted_store(sample_store, tmp_path):
    out = tmp_path / "ablate"
    r = runner.invoke(app, ["ablate", "--store", sample_store, "--out", str(out), "--epochs", "1",
                            "--batch-size", "8", "--audio-tokens", "pool-time-8", "--no-progress", *TINY])
    assert r.exit_code == 0, r.output[-3000:]
    md = (out / "ablation.md").read_text()
    assert md.strip() in r.output
    res = json.loads((out / "ablation.json").read_text())
    assert [row["variant"] for row in res["rows"]] == ["meanpool", "avigate", "waver/none", "waver/injection",
                                                      "waver/kd", "avigate+waver/injection", "avigate+waver/kd"]
    # the flow's style step wrote the rewritten captions: every variant has a style gap
    assert all(row["style_gap"] is not None for row in res["rows"])
    assert set(res["rows"][0]["style"]["styles"]) == {"footage", "clip_where", "casing", "punctuation",
                                                      "person", "word_drop"}
    run = out / "runs" / "waver-kd"
    r = runner.invoke(app, ["eval", "--store", sample_store, "--run", str(run), "--style-shift"])
    assert r.exit_code == 0, r.output[-3000:]
    assert "mean style-shift gap" in r.output and "footage" in r.output
