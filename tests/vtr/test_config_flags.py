"""One config-to-CLI helper (vtr.config_flags) makes the flags of `vtr extract` (a pydantic
model) and of `vtr train`/`sweep`/`ablate` (a dataclass): a field added to either config is
a flag, read by one set of rules, and a bad value is one line with exit status 2."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from flows.config import ExtractConfig
from training.runs import TrainConfig
from vtr.cli import app
from vtr.config_flags import config_fields, with_config_flags


@dataclasses.dataclass
class _Knobs:
    n: int = 3
    on: bool = True
    mode: str = "a"


class _Model(BaseModel):
    n: int = Field(3, ge=1, description="how many")
    kind: Literal["x", "y"] = Field("x", description="which")
    names: list[Literal["p", "q", "r"]] = Field(["p"], description="some")
    opts: dict[str, Any] = Field({}, description="reader options")
    blob: dict | None = Field(None, description="fsspec options")


def _app(cls, **kw) -> typer.Typer:
    out = typer.Typer()

    def cmd(store: str = typer.Option("s", "--store"), got: dict | None = None) -> None:
        typer.echo(json.dumps({"store": store, **got}))

    out.command("go")(with_config_flags(cls, cmd, into="got", **kw))
    out.command("other")(lambda: None)  # two commands: "go" is a subcommand
    return out


def _go(cls, *args, **kw):
    return CliRunner().invoke(_app(cls, **kw), ["go", *args])


def test_a_dataclass_and_a_pydantic_model_become_flags_by_the_same_rules():
    r = _go(_Knobs, "--n", "5", "--no-on")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"store": "s", "n": 5, "on": False}  # only the flags given
    assert json.loads(_go(_Knobs).output) == {"store": "s"}
    r = _go(_Model, "--names", "p,r", "--opts", "k=1", "--opts", "w=hello", "--blob", '{"a": {"b": 2}}',
            json_fields=("blob",))
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"store": "s", "names": ["p", "r"], "opts": {"k": 1, "w": "hello"},
                                    "blob": {"a": {"b": 2}}}
    r = _go(_Model, "--help")
    assert "how many (default: 3)" in r.output and "(x | y)" in r.output and "--no-n" not in r.output


def test_bad_values_are_one_line_with_exit_2_in_both_commands(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "s.zarr")
    for args, line in [
        (["extract", "--data-root", str(tmp_path), "--store", store, "--dataset-options", "n_val"],
         "error: --dataset-options: wants key=value, got 'n_val'"),
        (["extract", "--data-root", str(tmp_path), "--store", store, "--storage-options", "[1]"],
         "error: --storage-options: wants a JSON object {...}, got list '[1]'"),
        (["extract", "--data-root", str(tmp_path), "--store", store, "--frame-batch-size", "0"],
         "error: --frame-batch-size: Input should be greater than or equal to 1 (got 0)"),
        (["train", "--store", store, "--head", "meanpool", "--out", str(tmp_path / "r"), "--set", "lr"],
         "error: --set: wants key=value, got 'lr'"),
    ]:
        r = runner.invoke(app, args)
        assert (r.exit_code, r.output) == (2, line + "\n"), (args, r.output)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "r").exists()


def test_every_config_field_is_a_flag_of_its_commands():
    command = typer.main.get_command(app)
    expect = {"extract": ExtractConfig, "train": TrainConfig, "sweep": TrainConfig, "ablate": TrainConfig}
    for name, cls in expect.items():
        opts = {o for p in command.commands[name].params for o in p.opts}
        missing = [f.flag for f in config_fields(cls) if f.flag not in opts]
        assert not missing, (name, missing)
