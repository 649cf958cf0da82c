"""Schema compatibility: may a new version of a topic's JSON Schema replace the old one?

Only if events already published stay valid (no new required fields, no narrowed types, enums
or bounds, no newly closed objects) and nothing consumers rely on goes away (required fields
stay required). What cannot be proved compatible (e.g. a changed `anyOf`) is refused. Problems
name JSON pointers into the new schema; local `$ref`s are followed, so a change inside a
definition is reported at `/$defs/<Name>/...`.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

ALL_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
ARTICLE = {"array": "an array", "boolean": "a boolean", "integer": "an integer", "null": "null",
           "number": "a number", "object": "an object", "string": "a string"}
LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated",
                         "readOnly", "writeOnly", "$schema", "$id", "$defs", "definitions"})
UNDERSTOOD = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "items",
                            "prefixItems", "enum", "const", "pattern", "format", *LOWER, *UPPER}


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why `new` may not replace `old` (empty list = compatible). Each problem is one
    human-readable sentence naming the JSON path it concerns, e.g.
    "/properties/title: type changed from string to integer (events already published
    carry a string)" or "/required: 'author' was required and is no longer; consumers rely on it"
    """
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def compare(o: Any, optr: str, n: Any, nptr: str) -> None:
        o, optr = _deref(o, old, optr)
        n, nptr = _deref(n, new, nptr)
        if (optr, nptr) in seen or o == n == {}:  # compared already (ends `$ref` cycles)
            return
        seen.add((optr, nptr))
        if o is False:  # nothing was allowed here, so nothing published can break
            return
        if n is False:
            problems.append(f"{nptr or '/'}: now allows nothing, but events already published "
                            "may carry a value here")
            return
        problems.extend(_keyword_problems(o, n, nptr, old, new))
        both = _types(o) & _types(n)
        if "object" in both:
            compare_objects(o, n, optr, nptr)
        if "array" in both:  # each tuple position, then `items` for the rest
            for i in range(max(len(o.get("prefixItems", [])), len(n.get("prefixItems", []))) + 1):
                compare(*_item(o, i, optr), *_item(n, i, nptr))

    def compare_objects(o: dict[str, Any], n: dict[str, Any], optr: str, nptr: str) -> None:
        oprops, nprops = o.get("properties", {}), n.get("properties", {})
        oreq, nreq = set(o.get("required", [])), set(n.get("required", []))
        for name in sorted(nreq - oreq):
            was = "was optional and is now required" if name in oprops else (
                "is a new required property")
            problems.append(f"{nptr}/required: '{name}' {was}; events already published may "
                            "lack it")
        for name in sorted(oreq - nreq):
            problems.append(f"{nptr}/required: '{name}' was required and is no longer; "
                            "consumers rely on it")
        oap, nap = o.get("additionalProperties", True), n.get("additionalProperties", True)
        for name, schema in oprops.items():
            at_o, at_n = f"{optr}/properties/{_esc(name)}", f"{nptr}/properties/{_esc(name)}"
            if name in nprops:
                compare(schema, at_o, nprops[name], at_n)
            elif name in oreq and name in nreq:
                problems.append(f"{at_n}: required property '{name}' was removed from properties "
                                "(removing a required field); consumers rely on it")
            elif name not in oreq and nap is False:
                problems.append(f"{at_n}: optional property '{name}' removed while "
                                "additionalProperties is false; events already published that "
                                "carry it would be rejected")
            elif name not in oreq and isinstance(nap, dict) and nap:  # old values must fit it
                compare(schema, at_o, nap, f"{nptr}/additionalProperties")
        if nap is False and oap is not False:
            problems.append(f"{nptr}/additionalProperties: changed to false; events already "
                            "published may carry properties the new schema does not list")
        elif nap is not False:
            compare(oap, f"{optr}/additionalProperties", nap, f"{nptr}/additionalProperties")

    compare(old, "", new, "")
    return problems


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError unless `schema` is a valid draft 2020-12 JSON Schema for JSON objects."""
    if not isinstance(schema, dict):
        raise ValueError(f"an event schema must be a JSON object (a dict), not "
                         f"{type(schema).__name__}; pass e.g. Model.model_json_schema()")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/" + "/".join(str(p) for p in e.path)
        raise ValueError(f"not a valid JSON Schema (draft 2020-12) at {where}: {e.message}; "
                         "fix the schema and try again") from e
    root, _ = _deref(schema, schema, "")
    kind = root.get("type") if isinstance(root, dict) else None
    if kind not in ("object", ["object"]):
        raise ValueError(f'an event schema needs top-level "type": "object" (events are JSON '
                         f'objects), got {kind!r}; add "type": "object" and describe the '
                         'event fields under "properties"')


def _keyword_problems(o: dict[str, Any], n: dict[str, Any], nptr: str, old: Any,
                      new: Any) -> list[str]:
    """Problems with the keywords of one schema that do not descend into sub-schemas."""
    at, out = nptr or "/", []
    otypes, ntypes = _types(o), _types(n)
    lost = sorted(t for t in otypes - ntypes if not (t == "integer" and "number" in ntypes))
    if lost:
        carry = ("may carry any JSON value" if otypes == ALL_TYPES else
                 f"carry {ARTICLE.get(lost[0], lost[0])}" if len(otypes) == 1 else
                 "may carry " + " or ".join(ARTICLE.get(t, t) for t in lost))
        out.append(f"{at}: type changed from {_show(otypes)} to {_show(ntypes)} "
                   f"(events already published {carry})")
    values = _values(o)
    for kw in ("enum", "const"):
        allowed = {_key(v) for v in _values({kw: n[kw]}) or []} if kw in n else None
        gone = [_key(v) for v in (values or []) if allowed is not None and _key(v) not in allowed]
        if allowed is not None and values is None:
            out.append(f"{at}: {kw} added; events already published may carry other values")
        elif gone:
            change = (f"changed from {_key(o['const'])} to {_key(n['const'])}" if kw == "const"
                      and "const" in o else f"no longer allows {', '.join(gone)}")
            out.append(f"{at}: {kw} {change} (events already published may carry it)")
    for kw in LOWER + UPPER:
        if kw not in n:
            continue
        if kw not in o:
            out.append(f"{at}: {kw} {n[kw]} added; events already published may fall outside it")
        elif n[kw] > o[kw] if kw in LOWER else n[kw] < o[kw]:
            out.append(f"{at}: {kw} tightened from {o[kw]} to {n[kw]}; events already published "
                       "may fall outside it")
    for kw in ("pattern", "format"):
        if kw in n and o.get(kw) != n[kw]:
            was = f"changed from {o[kw]!r} to {n[kw]!r}" if kw in o else f"{n[kw]!r} added"
            out.append(f"{at}: {kw} {was}; events already published may not match it")
    for kw in sorted((set(o) | set(n)) - UNDERSTOOD):
        if _key(_inline(o.get(kw), old)) != _key(_inline(n.get(kw), new)):
            out.append(f"{at}: cannot prove the change to '{kw}' compatible; keep it unchanged "
                       "or publish on a new topic")
    return out


def _deref(schema: Any, root: Any, ptr: str) -> tuple[Any, str]:
    """Follow local `$ref`s that carry only annotations beside them; absent/true become {}.
    Returns the schema and the pointer it lives at."""
    followed: set[str] = set()
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        target = _resolve(ref, root)
        if ref in followed or target is None or set(schema) - {"$ref"} - ANNOTATIONS:
            break  # left in place: `$ref` is then compared as a keyword not understood
        followed.add(ref)
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema, ptr = (target if isinstance(target, bool) else {**target, **extra}), ref[1:]
    return ({} if schema is None or schema is True else schema), ptr


def _resolve(ref: str, root: Any) -> Any:
    """The schema a local `$ref` ("#" or "#/json/pointer") points at, or None."""
    if ref != "#" and not ref.startswith("#/"):
        return None
    node = root
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (dict, bool)) else None


def _inline(value: Any, root: Any, stack: tuple[str, ...] = ()) -> Any:
    """`value` with local `$ref`s replaced by what they point at (cycles cut), for comparing."""
    if isinstance(value, list):
        return [_inline(v, root, stack) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _inline(v, root, stack) for k, v in value.items()}
    ref = value.get("$ref")
    if isinstance(ref, str) and ref not in stack and _resolve(ref, root) is not None:
        out["$ref"] = _inline(_resolve(ref, root), root, (*stack, ref))
    return out


def _types(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a schema allows: `type` (a string or a list), else those of its `enum` or
    `const` values, else all."""
    values = _values(schema)
    kind = schema.get("type", ALL_TYPES if values is None else {_json_type(v) for v in values})
    return frozenset([kind] if isinstance(kind, str) else kind)


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "integer" if float(value).is_integer() else "number"
    names: dict[type, str] = {bool: "boolean", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "null")


def _values(schema: dict[str, Any]) -> list[Any] | None:
    """The only values a schema allows by `const` or `enum`, or None if it does not say."""
    return [schema["const"]] if "const" in schema else schema.get("enum")


def _item(schema: dict[str, Any], i: int, ptr: str) -> tuple[Any, str]:
    """The sub-schema array position `i` must match, and the pointer it lives at."""
    prefix = schema.get("prefixItems", [])
    return (prefix[i], f"{ptr}/prefixItems/{i}") if i < len(prefix) else (
        schema.get("items"), f"{ptr}/items")


def _show(types: frozenset[str]) -> str:
    names = sorted(types)
    return "any type" if types == ALL_TYPES else names[0] if len(names) == 1 else (
        f"[{', '.join(names)}]")


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _esc(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
