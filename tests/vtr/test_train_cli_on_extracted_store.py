"""`vtr train` and `vtr eval` from the command line on a store the extraction flow wrote."""
import json

from typer.testing import CliRunner

from vtr.cli import app

runner = CliRunner()


def test_both_heads_train_and_evaluate_from_the_cli(sample_store, tmp_path):
    for head, extra in (("meanpool", []), ("avigate", ["--set", "resampler_layers=1", "--set", "fusion_layers=1"])):
        run = tmp_path / head
        r = runner.invoke(app, ["train", "--store", sample_store, "--head", head, "--out", str(run),
                                "--epochs", "2", "--batch-size", "8", *extra])
        assert r.exit_code == 0, r.output[-2000:]
        r = runner.invoke(app, ["eval", "--store", sample_store, "--run", str(run), "--split", "test"])
        assert r.exit_code == 0, r.output[-2000:]
        assert "R1" in r.output and "single" in r.output
        report = json.loads((run / "eval_test.json").read_text())
        assert 0 <= report["single"]["t2v"]["R1"] <= 100 and report["n_videos"] > 0
