"""Every number, list and mapping in every registered kind's schema is bounded.

The test walks each kind's pydantic JSON schema (so a new kind is covered without editing this
file): every integer/number must have a lower and an upper bound, every list a ``max_length``,
every mapping a ``max_length`` (``maxProperties``); and ``genstat validate`` / ``genstat run`` must
refuse, with exit code 2 and no run directory, each value just outside a bound, 1e21, and (for
floats) nan and +-inf, and each list one item too long.
"""
import math

import pytest
import yaml

from genstat.cli import main
from genstat.experiments import list_kinds

#: fields whose bounds the JSON schema cannot show, as "kind:dotted.path" -> where they are checked;
#: they still get the +-1e21 (and nan/inf) cases below
EXEMPT: dict[str, str] = {
    "mc.bench:batch_sizes.[]": "BenchParams._sizes validator: [1, 2**34]",
    "mc.bench:small_n.[]": "BenchParams._sizes validator: [1, 2**34]",
    "mc.bench:memory_n.[]": "BenchParams._sizes validator: [1, 2**34]",
}


def _kinds():
    return {k: v for k, v in list_kinds().items() if not k.startswith("test.")}


def _resolve(schema, defs):
    while "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    return schema


def _nodes(schema, defs, path=()):
    """Yield (what, path, schema) for every number, array and mapping; path items are keys,
    '[]' (a list item) or '{}' (a mapping value)."""
    schema = _resolve(schema, defs)
    for sub in schema.get("anyOf", []):
        yield from _nodes(sub, defs, path)
    if "enum" in schema or "const" in schema:
        return
    t = schema.get("type")
    if t == "object" and "properties" in schema:
        for key, sub in schema["properties"].items():
            yield from _nodes(sub, defs, path + (key,))
    elif t == "object" and "additionalProperties" in schema:
        yield "mapping", path, schema
        if isinstance(schema["additionalProperties"], dict):
            yield from _nodes(schema["additionalProperties"], defs, path + ("{}",))
    elif t == "array":
        yield "array", path, schema
        yield from _nodes(schema.get("items", {}), defs, path + ("[]",))
    elif t in ("integer", "number"):
        yield t, path, schema


def _put(base, path, value):
    """A copy of ``base`` with ``value`` at ``path`` (first item of lists, first value of mappings)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head == "[]":
        items = list(base) if isinstance(base, list) and base else [{} if rest else None]
        items[0] = _put(items[0], rest, value)
        return items
    if head == "{}":
        d = dict(base) if isinstance(base, dict) and base else {"1.0": {} if rest else None}
        key = next(iter(d))
        d[key] = _put(d[key], rest, value)
        return d
    d = dict(base) if isinstance(base, dict) else {}
    d[head] = _put(d.get(head), rest, value)
    return d


def _get(base, path):
    for head in path:
        if head == "[]":
            base = base[0] if isinstance(base, list) and base else None
        elif head == "{}":
            base = next(iter(base.values())) if isinstance(base, dict) and base else None
        else:
            base = base.get(head) if isinstance(base, dict) else None
    return base


def _bad_numbers(t, s):
    step = 1 if t == "integer" else None
    out = []
    if "minimum" in s:
        m = s["minimum"]
        out.append(m - 1 if step else m - 1e-6 * max(1.0, abs(m)))
    if "exclusiveMinimum" in s:
        out.append(s["exclusiveMinimum"])
    if "maximum" in s:
        m = s["maximum"]
        out.append(m + 1 if step else m + 1e-6 * max(1.0, abs(m)))
    if "exclusiveMaximum" in s:
        out.append(s["exclusiveMaximum"])
    if t == "integer":
        out += [10**21, -(10**21)]
    else:
        out += [1e21, -1e21, math.nan, math.inf, -math.inf]
    return out


def _cases():
    cases, unbounded = [], []
    for name, kind in _kinds().items():
        schema = kind.params.model_json_schema()
        defs = schema.get("$defs", {})
        base = kind.params().model_dump(mode="json")
        for what, path, s in _nodes(schema, defs):
            label = f"{name}:{'.'.join(path)}"
            if what in ("integer", "number"):
                bounded = {"minimum", "exclusiveMinimum"} & set(s) and {"maximum", "exclusiveMaximum"} & set(s)
                if not bounded and label not in EXEMPT:
                    unbounded.append(label)
                for v in _bad_numbers(what, s):
                    cases.append((name, path, _put(base, path, v), f"{label}={v!r}"))
            elif what == "array":
                if "maxItems" not in s:
                    unbounded.append(label + " (list length)")
                    continue
                item = _get(base, path + ("[]",))
                if item is None:
                    continue  # no valid item to repeat; the item's own bounds are still tested
                cases.append((name, path, _put(base, path, [item] * (s["maxItems"] + 1)), f"{label} too long"))
            elif what == "mapping" and "maxProperties" not in s:
                unbounded.append(label + " (mapping size)")
    return cases, unbounded


CASES, UNBOUNDED = _cases()


def test_every_numeric_field_list_and_mapping_is_bounded():
    assert UNBOUNDED == [], "unbounded fields (add ge/le, max_length, or EXEMPT them):\n" + "\n".join(UNBOUNDED)


def test_defaults_validate():
    for name, kind in _kinds().items():
        kind.params.model_validate(kind.params().model_dump(mode="json"))


@pytest.mark.parametrize("name, path, params, label", CASES, ids=[c[3][:80] for c in CASES])
def test_out_of_bounds_value_is_refused(tmp_path, capsys, name, path, params, label):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "bounds", "kind": name, "params": params}))
    assert main(["validate", str(cfg)]) == 2, label
    err = capsys.readouterr().err
    assert f"params.{path[0]}" in err, err[-2000:]
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2, label
    assert not out.exists()


@pytest.mark.parametrize("seed", [-1, 2**63, 10**21])
def test_top_level_seed_is_bounded(tmp_path, seed):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "bounds", "kind": "quickstart", "seed": seed}))
    assert main(["validate", str(cfg)]) == 2
