"""Schema compatibility: may a new version of a topic's JSON Schema replace the old one?

Events already published were valid under the old schema, and consumers were written against
it. The new schema may replace it only if those events stay valid (no new required fields, no
narrowed types, enums or bounds, no newly closed objects) and nothing consumers rely on goes
away (a required field stays required). The check is conservative: a change it cannot prove
compatible (e.g. a different `anyOf`) is refused.

Each problem names a JSON pointer into the new schema (local `$ref`s are followed, so a change
inside a definition is reported at `/$defs/<Name>/...`).
"""

from __future__ import annotations

import json
import re
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


def compatibility_problems(old: dict, new: dict) -> list[str]:
    """Why `new` may not replace `old` (empty list = compatible). Each problem is one
    human-readable sentence naming the JSON path it concerns, e.g.
    "/properties/title: type changed from string to integer (events already published
    carry a string)" or "/required: 'author' was required and is no longer; consumers rely on it"
    """
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def compare(o: Any, n: Any, optr: str, nptr: str) -> None:
        o, optr = _deref(o, old, optr)
        n, nptr = _deref(n, new, nptr)
        if (optr, nptr) in seen:  # already compared (also ends `$ref` cycles)
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
        if "array" in both:
            compare_arrays(o, n, optr, nptr)

    def compare_objects(o: dict, n: dict, optr: str, nptr: str) -> None:
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
                compare(schema, nprops[name], at_o, at_n)
            elif name in oreq and name in nreq:
                problems.append(f"{at_n}: required property '{name}' was removed from properties "
                                "(removing a required field); consumers rely on it")
            elif name not in oreq:  # its values are now checked by patternProperties or the rest
                patterns = {p: s for p, s in n.get("patternProperties", {}).items()
                            if _matches(p, name)}
                for pattern, sub in patterns.items():
                    compare(schema, sub, at_o, f"{nptr}/patternProperties/{_esc(pattern)}")
                if not patterns and nap is False:
                    problems.append(f"{at_n}: optional property '{name}' removed while "
                                    "additionalProperties is false; events already published "
                                    "that carry it would be rejected")
                elif not patterns:
                    compare(schema, nap, at_o, f"{nptr}/additionalProperties")
        if nap is False and oap is not False:
            problems.append(f"{nptr}/additionalProperties: changed to false; events already "
                            "published may carry properties the new schema does not list")
        elif nap is not False:
            compare(oap, nap, f"{optr}/additionalProperties", f"{nptr}/additionalProperties")

    def compare_arrays(o: dict, n: dict, optr: str, nptr: str) -> None:
        opre, npre = o.get("prefixItems", []), n.get("prefixItems", [])
        for i in range(max(len(opre), len(npre))):
            osub, ops = (opre[i], f"{optr}/prefixItems/{i}") if i < len(opre) else (
                o.get("items"), f"{optr}/items")
            nsub, nps = (npre[i], f"{nptr}/prefixItems/{i}") if i < len(npre) else (
                n.get("items"), f"{nptr}/items")
            compare(osub, nsub, ops, nps)
        if "items" in o or "items" in n:
            compare(o.get("items"), n.get("items"), f"{optr}/items", f"{nptr}/items")

    compare(old, new, "", "")
    return problems


def check_schema(schema: dict) -> None:
    """Raise ValueError unless `schema` is a valid draft 2020-12 JSON Schema for JSON objects."""
    if not isinstance(schema, dict):
        raise ValueError(f"an event schema must be a JSON object (a dict), not "
                         f"{type(schema).__name__}; pass e.g. Model.model_json_schema()")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/" + "/".join(str(p) for p in e.path)
        raise ValueError(f"not a valid JSON Schema (draft 2020-12) at {where}: {e.message}; "
                         "fix the schema and register it again") from e
    root, _ = _deref(schema, schema, "")
    kind = root.get("type") if isinstance(root, dict) else None
    if kind != "object":
        raise ValueError(f'an event schema needs top-level "type": "object" (events are JSON '
                         f'objects), got {kind!r}; add "type": "object" and describe the '
                         'event fields under "properties"')


def _keyword_problems(o: dict, n: dict, nptr: str, old: Any, new: Any) -> list[str]:
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
    values = o["enum"] if "enum" in o else [o["const"]] if "const" in o else None
    for kw, allowed in (("enum", n.get("enum")), ("const", [n.get("const")])):
        if kw not in n:
            continue
        keys = {_key(v) for v in allowed}
        gone = [v for v in values or [] if _key(v) not in keys]
        if values is None:
            out.append(f"{at}: {kw} added; events already published may carry other values")
        elif gone and kw == "enum":
            out.append(f"{at}: enum values removed: {', '.join(_key(v) for v in gone)} "
                       "(events already published may carry them)")
        elif gone:
            was = _key(o["const"]) if "const" in o else f"enum {_key(o['enum'])}"
            out.append(f"{at}: const changed from {was} to {_key(n['const'])} "
                       "(events already published carry the old value)")
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
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
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


def _types(schema: dict) -> frozenset[str]:
    """The JSON types a schema allows: from `type`, else from `enum`/`const`, else all."""
    if "type" in schema:
        kind = schema["type"]
        return frozenset([kind] if isinstance(kind, str) else kind)
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return frozenset(_json_type(v) for v in values)
    return ALL_TYPES


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or isinstance(value, float) and value.is_integer():
        return "integer"
    names = {float: "number", str: "string", type(None): "null", list: "array", dict: "object"}
    return names.get(type(value), "object")


def _show(types: frozenset[str]) -> str:
    if types == ALL_TYPES:
        return "any type"
    return next(iter(types)) if len(types) == 1 else "[" + ", ".join(sorted(types)) + "]"


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _esc(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return True  # cannot tell: compare against it, which is the stricter choice
