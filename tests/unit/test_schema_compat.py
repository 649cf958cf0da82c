"""Schema compatibility: each rule refuses the breaking change and accepts its harmless twin."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from interlink.services.schema_compat import check_schema, compatibility_problems


def obj(props: dict[str, Any], required: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    """An object schema with `props`, `required` and any further keywords."""
    return {"type": "object", "properties": props, "required": list(required), **kw}


def refused(old: dict[str, Any], new: dict[str, Any], path: str, phrase: str) -> str:
    """Assert `new` gets exactly one problem, at `path`, containing `phrase`; return it."""
    problems = compatibility_problems(old, new)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems
    assert phrase in problems[0], problems
    return problems[0]


def field(**kw: Any) -> dict[str, Any]:
    """An object with one optional property `f` whose schema is `kw`."""
    return obj({"f": kw})


STR, INT = {"type": "string"}, {"type": "integer"}
BOOK = obj({"title": STR, "author": STR}, ("title", "author"))


# Properties and `required`.

def test_adding_an_optional_property_is_fine() -> None:
    """A new optional property is absent from old events, which is allowed."""
    assert compatibility_problems(BOOK, obj({**BOOK["properties"], "isbn": STR},
                                            ("title", "author"))) == []


def test_adding_a_required_property_is_refused() -> None:
    """Events already published lack a property that is new and required."""
    new = obj({**BOOK["properties"], "isbn": STR}, ("title", "author", "isbn"))
    refused(BOOK, new, "/required", "'isbn' is a new required property")


def test_making_an_optional_property_required_is_refused() -> None:
    """Old events may have left the property out."""
    old = obj({"title": STR, "isbn": STR}, ("title",))
    refused(old, obj(old["properties"], ("title", "isbn")), "/required", "'isbn' was optional")


def test_no_longer_requiring_a_field_is_refused() -> None:
    """Consumers rely on a required field being there."""
    new = obj(BOOK["properties"], ("title",))
    problem = refused(BOOK, new, "/required", "'author' was required and is no longer")
    assert problem == "/required: 'author' was required and is no longer; consumers rely on it"


def test_removing_a_required_field_entirely_is_refused_once() -> None:
    """Dropping it from `properties` and `required` is one problem, not two."""
    refused(BOOK, obj({"title": STR}, ("title",)), "/required", "'author' was required")


def test_removing_a_required_field_from_properties_only_is_refused() -> None:
    """Still listed in `required` but no longer described: consumers lose its schema."""
    new = obj({"title": STR}, ("title", "author"))
    refused(BOOK, new, "/properties/author", "removing a required field")


def test_changing_only_annotations_of_a_required_field_is_fine() -> None:
    """Titles and descriptions do not change which events are valid."""
    new = obj({"title": {**STR, "description": "The title"}, "author": {**STR, "title": "By"}},
              ("title", "author"), title="Book", description="A book")
    assert compatibility_problems(BOOK, new) == []


def test_removing_an_optional_property_is_fine() -> None:
    """Old events carrying it are still accepted as additional properties."""
    old = obj({"title": STR, "nick": STR}, ("title",))
    assert compatibility_problems(old, obj({"title": STR}, ("title",))) == []


def test_removing_an_optional_property_from_a_closed_object_is_refused() -> None:
    """With `additionalProperties: false`, old events carrying it would be rejected."""
    old = obj({"title": STR, "nick": STR}, ("title",), additionalProperties=False)
    new = obj({"title": STR}, ("title",), additionalProperties=False)
    refused(old, new, "/properties/nick", "additionalProperties is false")


def test_removed_optional_property_must_fit_additional_properties_schema() -> None:
    """Its old values are now checked by `additionalProperties`, which must accept them."""
    new = obj({"title": STR}, ("title",), additionalProperties=INT)
    old = obj({"title": STR, "nick": STR}, ("title",), additionalProperties=INT)
    refused(old, new, "/additionalProperties", "type changed from string to integer")
    old = obj({"title": STR, "nick": INT}, ("title",), additionalProperties=INT)
    assert compatibility_problems(old, new) == []


def test_nested_properties_are_checked_with_their_path() -> None:
    """A change deep inside an object names the whole path."""
    old = obj({"meta": obj({"lang": STR}, ("lang",))}, ("meta",))
    new = obj({"meta": obj({"lang": INT}, ("lang",))}, ("meta",))
    refused(old, new, "/properties/meta/properties/lang", "type changed")
    new = obj({"meta": obj({"lang": STR}, ())}, ("meta",))
    refused(old, new, "/properties/meta/required", "'lang' was required")


# Types.

def test_type_change_is_refused_with_what_old_events_carry() -> None:
    """The message names the path, both types and what published events hold."""
    problem = refused(obj({"title": STR}), obj({"title": INT}), "/properties/title", "type")
    assert problem == ("/properties/title: type changed from string to integer "
                       "(events already published carry a string)")


@pytest.mark.parametrize("old, new", [
    ("integer", "number"), ("string", ["string", "null"]),
    (["integer", "null"], ["number", "null"]), ("string", None),
])
def test_widening_a_type_is_fine(old: Any, new: Any) -> None:
    """integer -> number, adding a type, or dropping `type` keeps old events valid."""
    new_schema = {"type": new} if new else {}
    assert compatibility_problems(field(type=old), field(**new_schema)) == []


@pytest.mark.parametrize("old, new, phrase", [
    ("number", "integer", "carry a number"),
    (["string", "null"], "string", "may carry null"),
    ("boolean", ["string", "integer"], "carry a boolean"),
    (None, "string", "may carry any JSON value"),
])
def test_narrowing_or_changing_a_type_is_refused(old: Any, new: str, phrase: str) -> None:
    """Any old type the new schema does not allow is refused."""
    old_schema = {"type": old} if old else {}
    refused(field(**old_schema), field(type=new), "/properties/f", phrase)


def test_enum_without_type_counts_as_its_values_types() -> None:
    """`{"enum": ["a"]}` only ever carried strings, so adding `type: string` is fine."""
    assert compatibility_problems(field(enum=["a", "b"]),
                                  field(type="string", enum=["a", "b"])) == []
    refused(field(enum=["a", 1]), field(type="string"), "/properties/f",
            "from [integer, string] to string (events already published may carry an integer)")


# additionalProperties.

@pytest.mark.parametrize("old", [None, True, {"type": "string"}])
def test_closing_an_object_is_refused(old: Any) -> None:
    """From allowed (absent, true or a schema) to false: old events may carry extras."""
    old_schema = obj({"title": STR}, **({} if old is None else {"additionalProperties": old}))
    new_schema = obj({"title": STR}, additionalProperties=False)
    refused(old_schema, new_schema, "/additionalProperties", "changed to false")


def test_constraining_additional_properties_is_refused() -> None:
    """From any extra property to a schema for them: old extras may not fit it."""
    refused(obj({"title": STR}), obj({"title": STR}, additionalProperties=STR),
            "/additionalProperties", "type changed from any type to string")


def test_opening_an_object_is_fine() -> None:
    """From false to allowed, or keeping it false, accepts every old event."""
    closed = obj({"title": STR}, additionalProperties=False)
    assert compatibility_problems(closed, obj({"title": STR})) == []
    assert compatibility_problems(closed, closed) == []


def test_additional_properties_schema_is_compared() -> None:
    """A dict[str, int] map may become dict[str, float] but not dict[str, str]."""
    old = obj({"counts": {"type": "object", "additionalProperties": INT}})
    new = obj({"counts": {"type": "object", "additionalProperties": STR}})
    refused(old, new, "/properties/counts/additionalProperties", "type changed")
    wider = obj({"counts": {"type": "object", "additionalProperties": {"type": "number"}}})
    assert compatibility_problems(old, wider) == []


# enum and const.

def test_removing_an_enum_value_is_refused() -> None:
    """Old events may carry the removed value."""
    refused(field(type="string", enum=["draft", "live"]), field(type="string", enum=["live"]),
            "/properties/f", 'enum no longer allows "draft"')


def test_adding_an_enum_value_is_fine() -> None:
    """Every old value is still allowed."""
    assert compatibility_problems(field(enum=["draft", "live"]),
                                  field(enum=["draft", "live", "gone"])) == []


def test_adding_an_enum_is_refused() -> None:
    """An enum where any string was allowed narrows it."""
    refused(field(type="string"), field(type="string", enum=["a"]), "/properties/f", "enum added")


def test_changing_a_const_is_refused() -> None:
    """Old events carry the old constant."""
    refused(field(const="v1"), field(const="v2"), "/properties/f",
            'const changed from "v1" to "v2"')


def test_keeping_or_dropping_a_const_is_fine() -> None:
    """The same constant, or none at all, accepts old events."""
    assert compatibility_problems(field(const="v1"), field(const="v1", title="Version")) == []
    assert compatibility_problems(field(const="v1"), field(type="string")) == []


def test_enum_values_are_compared_as_json() -> None:
    """`true` and `1` are different JSON values."""
    kind = ["boolean", "integer"]
    refused(field(type=kind, enum=[True, 1]), field(type=kind, enum=[1]), "/properties/f",
            "enum no longer allows true")


# Bounds.

BOUNDS = [("minimum", 0, 5, -5), ("exclusiveMinimum", 0, 1, -1), ("maximum", 10, 5, 20),
          ("exclusiveMaximum", 10, 9, 11), ("minLength", 1, 2, 0), ("maxLength", 100, 50, 200),
          ("minItems", 1, 2, 0), ("maxItems", 5, 4, 6)]


@pytest.mark.parametrize("kw, value, tighter, looser", BOUNDS)
def test_tightening_a_bound_is_refused(kw: str, value: int, tighter: int, looser: int) -> None:
    """A stricter or newly added bound may exclude old events; the message names it."""
    refused(field(**{kw: value}), field(**{kw: tighter}), "/properties/f",
            f"{kw} tightened from {value} to {tighter}")
    refused(field(), field(**{kw: value}), "/properties/f", f"{kw} {value} added")


@pytest.mark.parametrize("kw, value, tighter, looser", BOUNDS)
def test_loosening_or_dropping_a_bound_is_fine(kw: str, value: int, tighter: int,
                                               looser: int) -> None:
    """A looser, equal or removed bound accepts every old event."""
    for new in ({kw: looser}, {kw: value}, {}):
        assert compatibility_problems(field(**{kw: value}), field(**new)) == []


def test_adding_or_changing_a_pattern_is_refused() -> None:
    """Old strings may not match the new pattern."""
    refused(field(type="string"), field(type="string", pattern="^[a-z]+$"), "/properties/f",
            "pattern '^[a-z]+$' added")
    refused(field(pattern="^a"), field(pattern="^b"), "/properties/f",
            "pattern changed from '^a' to '^b'")


def test_keeping_or_dropping_a_pattern_is_fine() -> None:
    """The same pattern, or none, accepts every old string."""
    assert compatibility_problems(field(pattern="^a"), field(pattern="^a")) == []
    assert compatibility_problems(field(pattern="^a"), field()) == []


def test_adding_a_format_is_refused() -> None:
    """A format is a bound on strings too (str -> datetime in pydantic adds one)."""
    refused(field(type="string"), field(type="string", format="date-time"), "/properties/f",
            "format 'date-time' added")
    assert compatibility_problems(field(type="string", format="date-time"),
                                  field(type="string")) == []


# Arrays.

def test_items_are_checked() -> None:
    """list[str] -> list[int] is refused at the items path; list[int] -> list[float] is not."""
    refused(field(type="array", items=STR), field(type="array", items=INT),
            "/properties/f/items", "type changed from string to integer")
    assert compatibility_problems(field(type="array", items=INT),
                                  field(type="array", items={"type": "number"})) == []


def test_prefix_items_are_checked_by_position() -> None:
    """Each tuple position is compared, and new positions must accept what old items allowed."""
    old = field(type="array", prefixItems=[INT, STR])
    refused(old, field(type="array", prefixItems=[INT, INT]), "/properties/f/prefixItems/1",
            "type changed from string to integer")
    refused(field(type="array", prefixItems=[INT]), field(type="array", prefixItems=[INT, STR]),
            "/properties/f/prefixItems/1", "may carry any JSON value")
    assert compatibility_problems(field(type="array", prefixItems=[INT], items=STR),
                                  field(type="array", prefixItems=[INT, STR], items=STR)) == []


def test_forbidding_items_is_refused() -> None:
    """`items: false` rejects array elements that old events carry."""
    refused(field(type="array", items=STR), field(type="array", items=False),
            "/properties/f/items", "now allows nothing")


# Keywords the checker does not understand.

ANY_OF = {"anyOf": [STR, INT]}


def test_changed_any_of_is_refused() -> None:
    """A changed anyOf cannot be proved compatible, even if it only widens."""
    problem = refused(field(**ANY_OF), field(anyOf=[STR, INT, {"type": "null"}]),
                      "/properties/f", "cannot prove")
    assert "keep it unchanged or publish on a new topic" in problem


@pytest.mark.parametrize("kw", ["oneOf", "allOf", "not", "if", "uniqueItems", "multipleOf"])
def test_adding_a_keyword_not_understood_is_refused(kw: str) -> None:
    """Adding (or removing) anything not understood is refused."""
    refused(field(), field(**{kw: 1 if kw == "multipleOf" else STR}), "/properties/f",
            f"cannot prove the change to '{kw}' compatible")


def test_unchanged_any_of_is_fine() -> None:
    """An identical sub-schema is compatible whatever it means."""
    assert compatibility_problems(field(**ANY_OF), field(**ANY_OF, description="x")) == []


def test_any_of_with_a_changed_definition_is_refused() -> None:
    """The same anyOf text pointing at a changed definition is a change."""
    old = {**field(anyOf=[{"$ref": "#/$defs/A"}, {"type": "null"}]), "$defs": {"A": STR}}
    new = {**old, "$defs": {"A": INT}}
    refused(old, new, "/properties/f", "cannot prove the change to 'anyOf'")
    assert compatibility_problems(old, {**old}) == []


# $ref and $defs.

def test_changed_definition_is_reported_inside_defs() -> None:
    """A local $ref is followed in old and new, each against its own root."""
    old = {**obj({"a": {"$ref": "#/$defs/A"}}, ("a",)), "$defs": {"A": obj({"x": STR}, ("x",))}}
    new = {**old, "$defs": {"A": obj({"x": INT}, ("x",))}}
    refused(old, new, "/$defs/A/properties/x", "type changed from string to integer")


def test_ref_and_inline_schema_are_compared_by_content() -> None:
    """Moving a sub-schema into $defs (or renaming the definition) is no change."""
    inline = obj({"a": obj({"x": STR}, ("x",))}, ("a",))
    by_ref = {**obj({"a": {"$ref": "#/$defs/B", "description": "an a"}}, ("a",)),
              "$defs": {"B": obj({"x": STR}, ("x",))}}
    assert compatibility_problems(inline, by_ref) == []
    assert compatibility_problems(by_ref, inline) == []


def test_recursive_schemas_terminate() -> None:
    """Reference cycles are compared once: no endless recursion, one problem."""
    def tree(leaf: dict[str, Any]) -> dict[str, Any]:
        node = obj({"v": leaf, "kids": {"type": "array", "items": {"$ref": "#/$defs/N"}}}, ("v",))
        return {"$defs": {"N": node}, "$ref": "#/$defs/N"}
    assert compatibility_problems(tree(INT), tree(INT)) == []
    assert compatibility_problems(tree(INT), tree({"type": "number"})) == []
    refused(tree(INT), tree(STR), "/$defs/N/properties/v", "type changed")


def test_pure_ref_loop_terminates() -> None:
    """A $ref chain that points back at itself does not hang."""
    loop = {**field(**{"$ref": "#/$defs/A"}),
            "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}}
    assert compatibility_problems(loop, loop) == []


def test_several_problems_are_all_reported() -> None:
    """Every problem is listed, not just the first."""
    new = obj({"title": INT, "isbn": STR}, ("title", "isbn"), additionalProperties=False)
    problems = compatibility_problems(BOOK, new)
    assert len(problems) == 4, problems
    assert any(p.startswith("/properties/title: type changed") for p in problems)
    assert any("'author' was required" in p for p in problems)
    assert any("'isbn' is a new required property" in p for p in problems)
    assert any(p.startswith("/additionalProperties: changed to false") for p in problems)


# Schemas generated by pydantic.

class Author(BaseModel):
    name: str
    born: int


class AuthorV2(BaseModel):
    name: str
    born: str


class PostV1(BaseModel):
    title: str = Field(max_length=100)
    author: Author
    tags: list[str] = []


class PostExtraOptional(BaseModel):
    title: str = Field(max_length=100, description="Shown in lists")
    author: Author
    tags: list[str] = []
    subtitle: str | None = None
    views: int = 0


class PostNoAuthor(BaseModel):
    title: str = Field(max_length=100)
    tags: list[str] = []


class PostIntTitle(BaseModel):
    title: int
    author: Author
    tags: list[str] = []


class PostAuthorV2(BaseModel):
    title: str = Field(max_length=100)
    author: AuthorV2 = Field(title="Author")
    tags: list[str] = []


V1 = PostV1.model_json_schema()


def test_pydantic_extra_optional_field_is_compatible() -> None:
    """v2 adds an Optional field and a field with a default: compatible."""
    assert compatibility_problems(V1, PostExtraOptional.model_json_schema()) == []
    assert compatibility_problems(V1, PostV1.model_json_schema()) == []


def test_pydantic_dropped_required_field_is_refused() -> None:
    """v2 drops the required `author`."""
    refused(V1, PostNoAuthor.model_json_schema(), "/required", "'author' was required")


def test_pydantic_changed_field_type_is_refused() -> None:
    """v2 turns `title` from str into int."""
    problem = refused(V1, PostIntTitle.model_json_schema(), "/properties/title", "type")
    assert problem.endswith("from string to integer (events already published carry a string)")


def test_pydantic_changed_nested_field_type_is_refused() -> None:
    """v2 changes a field of the nested model (under $defs, with a renamed definition)."""
    new = PostAuthorV2.model_json_schema()
    assert "AuthorV2" in new["$defs"]
    refused(V1, new, "/$defs/AuthorV2/properties/born", "type changed from integer to string")


def test_pydantic_making_a_field_nullable_is_refused_as_unproven() -> None:
    """`str` -> `str | None` becomes an anyOf, which the checker does not try to prove."""
    class PostNullableTitle(BaseModel):
        title: str | None = Field(max_length=100)
        author: Author
        tags: list[str] = []
    refused(V1, PostNullableTitle.model_json_schema(), "/properties/title", "'anyOf'")


# check_schema.

def test_check_schema_accepts_pydantic_schemas() -> None:
    """Plain and recursive (top-level $ref) pydantic schemas are valid event schemas."""
    class Node(BaseModel):
        v: int
        kids: list[Node] = []
    check_schema(V1)
    check_schema(Node.model_json_schema())
    check_schema({"type": ["object"]})


@pytest.mark.parametrize("schema, phrase", [
    ([{"type": "object"}], "must be a JSON object (a dict), not list"),
    ({"type": "object", "properties": {"x": {"type": "strin"}}}, "not a valid JSON Schema"),
    ({"type": "object", "minProperties": -1}, "/minProperties"),
    ({"type": "array", "items": {"type": "string"}}, '"type": "object"'),
    ({"properties": {"x": {"type": "string"}}}, "got None"),
])
def test_check_schema_refuses_with_a_clear_message(schema: Any, phrase: str) -> None:
    """Not a dict, not valid JSON Schema, or not describing an object: ValueError says why."""
    with pytest.raises(ValueError) as err:
        check_schema(schema)
    assert phrase in str(err.value)
