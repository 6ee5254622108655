"""Hostile or large inputs to the config loader, and ``genstat validate --print``."""
import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from genstat.cli import main
from genstat.experiments import ConfigError, experiment, load_config

# The classic "billion laughs": 428 bytes that expand to 10**9 strings when aliases are followed.
ALIAS_BOMB = """\
name: bomb
kind: quickstart
params:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  n_samples: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_refused_with_short_output(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    proc = subprocess.run([sys.executable, "-m", "genstat", "validate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stdout) + len(proc.stderr) < 2000, len(proc.stderr)
    assert "alias" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_plain_anchors_without_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nkind: quickstart\nparams: &p\n  n_samples: 2000\n")
    _, params = load_config(path)
    assert params.n_samples == 2000


class _Many(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int = Field(0, ge=0, le=10)


@experiment("test.many", _Many, help="test kind with one field")
def _many(p, run):
    pass


def test_errors_are_capped_and_values_truncated(tmp_path, capsys):
    raw = {"name": "m", "kind": "test.many", "params": {f"k{i}": i for i in range(500)}}
    raw["params"]["x"] = "v" * 100_000
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err) < 6000, len(err)
    assert "... and 451 more" in err                     # 501 errors, 50 shown
    assert "params.x" in err and "v" * 200 not in err   # the 100 kB value is cut
    with pytest.raises(ConfigError) as exc:              # the exception keeps every error
        load_config(path)
    assert len(exc.value.errors) == 501


def test_validate_print_shows_the_resolved_config(tmp_path, capsys):
    path = tmp_path / "q.yaml"
    path.write_text("name: q\nkind: quickstart\nparams:\n  n_samples: 5000\n")
    assert main(["validate", str(path), "--print", "--set", "params.level=0.9", "--seed", "4",
                 "--device", "cpu"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["seed"] == 4 and out["device"] == "cpu" and out["name"] == "q"
    assert out["params"]["n_samples"] == 5000 and out["params"]["level"] == 0.9
    assert out["params"]["proposal_scale"] == 3.0            # a default filled in
