//! Tool definitions for agent frameworks: every action as an OpenAI, Anthropic or MCP tool.
//!
//! `callout tools --format openai|anthropic|mcp` prints [`export`]: a JSON array with one tool
//! definition per action, in the shape that framework's API takes, so an agent built on it can
//! offer Callout's actions to its model without anyone copying schemas by hand. The action's
//! name becomes the tool name unchanged (so a tool call names the action to run), its
//! description the tool's description, and its effective input schema (the component's,
//! narrowed by the manifest) the tool's parameters.
//!
//! # Shapes, and the documents they follow
//!
//! - **openai**: a Chat Completions function tool, `{"type": "function", "function": {"name",
//!   "description", "parameters", "strict": true}}` (OpenAI API reference, Chat Completions,
//!   `tools`; <https://platform.openai.com/docs/guides/function-calling>). `strict: true` makes
//!   the model's arguments follow the schema exactly, which works only for the subset of JSON
//!   Schema in the Structured Outputs guide, "Supported schemas"
//!   (<https://platform.openai.com/docs/guides/structured-outputs#supported-schemas>), so the
//!   parameters are rewritten by [`openai_strict`]. Names must match `^[a-zA-Z0-9_-]{1,64}$`.
//!   The output schema has no place in this shape and is left out.
//! - **anthropic**: a Messages API client tool, `{"name", "description", "input_schema"}`
//!   (<https://platform.claude.com/docs/en/agents-and-tools/tool-use/define-tools>). The API
//!   takes JSON Schema draft 2020-12 with `"type": "object"` at the root and rejects `anyOf`,
//!   `oneOf` and `allOf` at the top level (its error: "input_schema does not support oneOf,
//!   allOf, or anyOf at the top level"). Standard keywords (`minLength`, `pattern`, ...) are
//!   kept: Claude reads them. Names must match `^[a-zA-Z0-9_-]{1,128}$`. No output schema.
//! - **mcp**: a Model Context Protocol `Tool` as `tools/list` returns it, `{"name",
//!   "description", "inputSchema", "outputSchema"}` (specification 2025-11-25, `schema.ts`,
//!   <https://modelcontextprotocol.io/specification/2025-11-25/server/tools>). `inputSchema`
//!   must have `"type": "object"` at the root; `outputSchema` is optional and "currently
//!   restricted to type: "object" at the root level", so an action whose output schema is not an
//!   object schema gets none (wrapping it, say in `{"value": ...}`, would promise a
//!   `structuredContent` no server produces). Both schemas go as they are, `$schema` and
//!   `x-prompt` included: MCP takes any JSON Schema 2020-12 (unknown keywords are annotations),
//!   so the export shows exactly what an MCP server would list. The optional `title` is left
//!   out: an action has no display name beyond its name. Names SHOULD be 1 to 128 of
//!   `A-Z a-z 0-9 _ - .`.
//!
//! For anthropic, vendor keywords (`x-...`, such as the manifest's `x-prompt`) are moved into
//! the description as text, where the model reads them, and `$schema` is dropped (the API
//! assumes 2020-12).
//!
//! [`export`] never renames or drops a tool; [`problems`] lists what would make a framework
//! reject the export (a bad or duplicate name, a schema strict mode cannot take), so the caller
//! can refuse to print it.
//!
//! # OpenAI strict mode
//!
//! [`openai_strict`] rewrites a schema so that it passes [`strict_violations`], the independent
//! check of the rules as documented (as of 2026):
//!
//! - the root is `"type": "object"`, not `anyOf`;
//! - every object has `"additionalProperties": false` and lists every property in `required`;
//!   a property that was optional becomes nullable instead (`"type": [T, "null"]`, or
//!   `anyOf: [<schema>, {"type": "null"}]` when it has no plain type), unless it already
//!   accepts null;
//! - only these keywords: `type` (`string`, `number`, `integer`, `boolean`, `object`, `array`,
//!   `null`; a list only as `[T, "null"]`), `description`, `title`, `enum`, `const`, `anyOf`,
//!   `$ref` (local, standing alone), `$defs` (at the root), `properties`, `required`,
//!   `additionalProperties`, `items`; for strings `pattern` and `format` (only `date-time`,
//!   `time`, `date`, `duration`, `email`, `hostname`, `ipv4`, `ipv6`, `uuid`); for numbers
//!   `multipleOf`, `maximum`, `exclusiveMaximum`, `minimum`, `exclusiveMinimum`; for arrays
//!   `minItems`, `maxItems`. `title` is not in OpenAI's list but is accepted in practice (the
//!   official Python SDK sends Pydantic schemas, which have a `title` everywhere, with
//!   `strict: true`); everything else the docs do not name is treated as unsupported;
//! - limits: at most 10 levels of object nesting, 5,000 properties, 1,000 enum values,
//!   120,000 characters across property names, definition names, enum and const values, and
//!   15,000 characters in any enum of more than 250 strings.
//!
//! Nothing is dropped without a trace: what strict mode cannot express goes into that schema's
//! `description` as readable text, where the model still sees it (the action validates its
//! inputs anyway). Where the rewrite has a choice it narrows rather than widens, so that what
//! the model sends stays valid for the action:
//!
//! - unsupported keywords become `(minLength: 1; maxLength: 200)`, `x-prompt` becomes
//!   `Ask: "What is your name?"`; `$schema`, `$id`, `$comment`, `$anchor`, `$dynamicAnchor`
//!   and `$vocabulary` are dropped silently (they say nothing about the value);
//! - `oneOf` becomes `anyOf`, which is equivalent when no value can match two branches (the
//!   branches differ in type, in `const`/`enum` values, in their property names, or in a
//!   property's `const`/`enum`, as serde's tagged enums do); otherwise the description says
//!   that exactly one alternative must match;
//! - `allOf` of one schema is merged into its parent; a longer `allOf` goes to the description;
//! - a map or free-form object (`additionalProperties` not `false`) cannot be expressed: strict
//!   mode has no way to allow unnamed keys. The object is closed (only its named properties
//!   remain, all of them for a struct, none for a map) and the description says which other
//!   keys the action would also take. A pure map can then only be sent empty; that is honest
//!   (whatever the model sends is valid) and visible, whereas turning it into a JSON string
//!   would hand the action a string it does not accept;
//! - a schema that allows any value becomes `anyOf` string, number, boolean or null, noted;
//! - a `$ref` with other keywords beside it is replaced by the definition it names, merged
//!   with those keywords (inside its own definition, a recursive type, it stays a bare `$ref`);
//!   `definitions` and nested `$defs` move to the root `$defs`;
//! - a type list like `["string", "integer"]` becomes `anyOf` of one schema per type.
//!
//! A model following the rewritten schema sends `null` for a property the action marks
//! optional and not nullable; whoever passes its arguments on should drop such `null`s before
//! validating them against the action's own schema.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

/// One action, as a tool: what [`export`] needs of it.
#[derive(Debug, Clone, Copy)]
pub struct ToolSpec<'a> {
    /// The action's name, used unchanged as the tool's name (a manifest name, lower-case
    /// letters, digits and `-`, is valid in every format).
    pub name: &'a str,
    /// What the action does, for the model; left out of the tool when empty.
    pub description: &'a str,
    /// The action's effective input schema (JSON Schema 2020-12, `"type": "object"`).
    pub input_schema: &'a Value,
    /// The action's output schema; only the mcp format carries it.
    pub output_schema: &'a Value,
}

/// Which framework's tool shape [`export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolFormat {
    /// OpenAI Chat Completions function tools, with `strict: true`.
    OpenAi,
    /// Anthropic Messages API client tools.
    Anthropic,
    /// Model Context Protocol `Tool` objects.
    Mcp,
}

impl ToolFormat {
    const ALL: [ToolFormat; 3] = [ToolFormat::OpenAi, ToolFormat::Anthropic, ToolFormat::Mcp];

    fn as_str(self) -> &'static str {
        match self {
            ToolFormat::OpenAi => "openai",
            ToolFormat::Anthropic => "anthropic",
            ToolFormat::Mcp => "mcp",
        }
    }
}

impl fmt::Display for ToolFormat {
    /// The name `--format` takes: `openai`, `anthropic` or `mcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ToolFormat {
    type Err = String;

    /// Parses `openai`, `anthropic` or `mcp` (ASCII case ignored); the error lists those.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ToolFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let valid: Vec<&str> = ToolFormat::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown tool format {s:?}; use one of: {}",
                    valid.join(", ")
                )
            })
    }
}

/// The whole export: a JSON array with one tool definition per action, in `format`'s shape
/// (see the module documentation), in the order given.
///
/// Never fails and never renames or drops a tool: run [`problems`] first to learn whether the
/// framework will accept the result.
pub fn export(format: ToolFormat, tools: &[ToolSpec<'_>]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| match format {
                ToolFormat::OpenAi => openai_tool(t),
                ToolFormat::Anthropic => anthropic_tool(t),
                ToolFormat::Mcp => mcp_tool(t),
            })
            .collect(),
    )
}

/// Everything that would make `format`'s framework reject [`export`]'s result: a tool name it
/// does not allow, a name used twice, an input schema whose root is not an object and, for
/// openai, every [`strict_violations`] left after [`openai_strict`]. Empty when the export is
/// good. Each entry starts with the tool's name.
pub fn problems(format: ToolFormat, tools: &[ToolSpec<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for t in tools {
        if !seen.insert(t.name) {
            out.push(format!(
                "{}: the name is used by more than one tool; tool names must be unique",
                t.name
            ));
        }
        let (max, extra, rule) = match format {
            ToolFormat::OpenAi => (64, "", "^[a-zA-Z0-9_-]{1,64}$"),
            ToolFormat::Anthropic => (128, "", "^[a-zA-Z0-9_-]{1,128}$"),
            ToolFormat::Mcp => (128, ".", "1 to 128 of A-Z a-z 0-9 _ - ."),
        };
        let name_ok = !t.name.is_empty()
            && t.name.len() <= max
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(c));
        if !name_ok {
            out.push(format!(
                "{}: not a valid {format} tool name; it must match {rule}",
                t.name
            ));
        }
        match format {
            ToolFormat::OpenAi => {
                for v in strict_violations(&openai_strict(t.input_schema)) {
                    out.push(format!("{}: {v}", t.name));
                }
            }
            ToolFormat::Anthropic | ToolFormat::Mcp => {
                if t.input_schema.get("type").and_then(Value::as_str) != Some("object") {
                    out.push(format!(
                        "{}: the input schema's root must have \"type\": \"object\"",
                        t.name
                    ));
                }
            }
        }
    }
    out
}

fn openai_tool(t: &ToolSpec<'_>) -> Value {
    let mut f = Map::new();
    f.insert("name".into(), t.name.into());
    if !t.description.is_empty() {
        f.insert("description".into(), t.description.into());
    }
    f.insert("parameters".into(), openai_strict(t.input_schema));
    f.insert("strict".into(), true.into());
    json!({"type": "function", "function": f})
}

fn anthropic_tool(t: &ToolSpec<'_>) -> Value {
    let mut schema = t.input_schema.clone();
    vendor_keywords_to_description(&mut schema);
    if let Value::Object(m) = &mut schema {
        m.remove("$schema");
        let mut notes = Notes::default();
        for k in ["anyOf", "oneOf", "allOf"] {
            if let Some(v) = m.remove(k) {
                notes.keyword(k, v);
            }
        }
        notes.apply(m);
    }
    let mut tool = Map::new();
    tool.insert("name".into(), t.name.into());
    if !t.description.is_empty() {
        tool.insert("description".into(), t.description.into());
    }
    tool.insert("input_schema".into(), schema);
    Value::Object(tool)
}

fn mcp_tool(t: &ToolSpec<'_>) -> Value {
    let mut tool = Map::new();
    tool.insert("name".into(), t.name.into());
    if !t.description.is_empty() {
        tool.insert("description".into(), t.description.into());
    }
    tool.insert("inputSchema".into(), t.input_schema.clone());
    if t.output_schema.get("type").and_then(Value::as_str) == Some("object") {
        tool.insert("outputSchema".into(), t.output_schema.clone());
    }
    Value::Object(tool)
}

/// Moves every `x-...` keyword, at every level, into that schema's description.
fn vendor_keywords_to_description(schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    let vendor: Vec<String> = m.keys().filter(|k| k.starts_with("x-")).cloned().collect();
    let mut notes = Notes::default();
    for k in vendor {
        if let Some(v) = m.remove(&k) {
            notes.keyword(&k, v);
        }
    }
    notes.apply(m);
    for_each_subschema(m, &mut |_, child| vendor_keywords_to_description(child));
}

// ---------------------------------------------------------------------------------------------
// The strict-mode rules, as data shared by the rewrite and the check.

/// The `format` values strict mode supports.
const STRICT_FORMATS: [&str; 9] = [
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];
/// JSON Schema's type names.
const TYPE_NAMES: [&str; 7] = [
    "string", "number", "integer", "boolean", "object", "array", "null",
];
const NUMBER_KEYWORDS: [&str; 5] = [
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
];
const MAX_OBJECT_DEPTH: usize = 10;
const MAX_PROPERTIES: usize = 5_000;
const MAX_ENUM_VALUES: usize = 1_000;
const MAX_STRING_CHARS: usize = 120_000;
const LARGE_ENUM: usize = 250;
const LARGE_ENUM_CHARS: usize = 15_000;

/// Keywords that say nothing about the value; the rewrite drops them without a note.
const SILENT: [&str; 6] = [
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
];

/// How many `$ref`s in a row are followed to learn what a `oneOf` branch takes (against a
/// cycle of references to references).
const MAX_REF_HOPS: usize = 32;

const ANY_NOTE: &str = "Any JSON value is accepted here; strict mode can send a string, \
                        number, boolean or null.";
const FREE_FORM_NOTE: &str = "Free-form object: strict mode cannot send keys that are not \
                              named, so only an empty object can be sent.";
const ONE_OF_NOTE: &str = "Exactly one of the alternatives must match.";
const NOTHING_NOTE: &str = "The original schema allows no value here.";

// ---------------------------------------------------------------------------------------------
// Rewrite.

/// An input schema rewritten to satisfy OpenAI strict mode (the rules, and what happens to
/// what they forbid, are in the module documentation). The result passes
/// [`strict_violations`] unless the root is not an object schema at all (an action's input
/// always is), a `$ref` points nowhere or a size limit is exceeded; none of these can be
/// rewritten away.
pub fn openai_strict(schema: &Value) -> Value {
    let mut doc = schema.clone();
    normalize_defs(&mut doc);
    let snapshot = doc.clone();
    let mut rewrite = Rewrite {
        doc: &snapshot,
        inlining: Vec::new(),
    };
    rewrite.schema(&doc, true)
}

struct Rewrite<'a> {
    /// The whole schema (definitions already at the root), for resolving `$ref`s.
    doc: &'a Value,
    /// The `$ref`s being inlined at the moment, outermost first: one met again inside its own
    /// definition stays a `$ref`, so a recursive type is inlined once, not forever.
    inlining: Vec<String>,
}

impl Rewrite<'_> {
    fn schema(&mut self, node: &Value, root: bool) -> Value {
        let empty = Map::new();
        let source = match node {
            Value::Object(m) => m,
            Value::Bool(false) if !root => {
                return json!({"type": "null", "description": format!("({NOTHING_NOTE})")});
            }
            _ if root => &empty,
            _ => return any_value(),
        };
        let mut m = source.clone();

        if let Some(r) = m.get("$ref").cloned() {
            let bare = m
                .keys()
                .all(|k| k == "$ref" || SILENT.contains(&k.as_str()));
            if bare && !root {
                return json!({"$ref": r});
            }
            // Strict mode wants `$ref` alone: inline the definition, with the keywords beside
            // the `$ref` taking precedence. Inside its own definition (a recursive type) the
            // `$ref` stays, without the keywords beside it.
            if let Some(mut merged) = self.target(&r) {
                m.remove("$ref");
                merged.extend(m);
                return self.inline(&Value::Object(merged), root, &r);
            }
            if !root {
                return json!({"$ref": r});
            }
        }

        if let Some(Value::Array(all)) = m.get("allOf")
            && let [only] = all.as_slice()
        {
            let via = only.get("$ref").cloned();
            let branch = match &via {
                Some(r) => self.target(r),
                None => only.as_object().cloned(),
            };
            if let Some(branch) = branch
                && branch
                    .keys()
                    .all(|k| !m.contains_key(k) || matches!(k.as_str(), "description" | "title"))
            {
                m.remove("allOf");
                for (k, v) in branch {
                    m.entry(k).or_insert(v);
                }
                let merged = Value::Object(m);
                return match &via {
                    Some(r) => self.inline(&merged, root, r),
                    None => self.schema(&merged, root),
                };
            }
        }

        let mut notes = Notes::default();
        let mut out = Map::new();
        if root {
            for k in ["anyOf", "oneOf"] {
                if let Some(v) = m.remove(k) {
                    notes.keyword(k, v);
                }
            }
        }

        let mut types: Vec<String> = match m.remove("type") {
            None => Vec::new(),
            Some(Value::String(t)) => vec![t],
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => list
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            Some(other) => {
                notes.keyword("type", other);
                Vec::new()
            }
        };
        let unknown: Vec<String> = types
            .iter()
            .filter(|t| !TYPE_NAMES.contains(&t.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            types.retain(|t| TYPE_NAMES.contains(&t.as_str()));
            notes.keyword("type", json!(unknown));
        }
        dedup(&mut types);
        if types.is_empty() {
            types = inferred_types(&m, root);
        }
        let is = |t: &str| types.iter().any(|x| x == t);
        let is_object = is("object");
        let is_array = is("array");
        let is_string = is("string");
        let is_number = is("number") || is("integer");

        let mut one_of = None;
        for (k, v) in &m {
            match k.as_str() {
                "description" | "title" if v.is_string() => {
                    out.insert(k.clone(), v.clone());
                }
                "enum" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                    out.insert(k.clone(), v.clone());
                }
                "const" => {
                    out.insert(k.clone(), v.clone());
                }
                "$defs" if v.is_object() => {
                    let mut defs = Map::new();
                    for (name, def) in v.as_object().into_iter().flatten() {
                        defs.insert(name.clone(), self.schema(def, false));
                    }
                    out.insert(k.clone(), Value::Object(defs));
                }
                k if SILENT.contains(&k) => {}
                "properties" | "required" | "additionalProperties" if is_object => {}
                "items" if is_array && (v.is_object() || v.is_boolean()) => {}
                "minItems" | "maxItems" if is_array && v.is_u64() => {
                    out.insert(k.clone(), v.clone());
                }
                "pattern" if is_string && v.is_string() => {
                    out.insert(k.clone(), v.clone());
                }
                "format"
                    if is_string && v.as_str().is_some_and(|f| STRICT_FORMATS.contains(&f)) =>
                {
                    out.insert(k.clone(), v.clone());
                }
                k if is_number && NUMBER_KEYWORDS.contains(&k) && v.is_number() => {
                    out.insert(k.to_owned(), v.clone());
                }
                "anyOf" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                    let branches = v.as_array().into_iter().flatten();
                    let branches = branches.map(|b| self.schema(b, false)).collect();
                    out.insert(k.clone(), Value::Array(branches));
                }
                "oneOf" if v.as_array().is_some_and(|a| !a.is_empty()) => one_of = Some(v),
                _ => notes.keyword(k, v.clone()),
            }
        }

        if let Some(Value::Array(branches)) = one_of {
            if out.contains_key("anyOf") {
                notes.keyword("oneOf", Value::Array(branches.clone()));
            } else {
                if !self.disjoint(branches) {
                    notes.sentence(ONE_OF_NOTE);
                }
                let rewritten = branches.iter().map(|b| self.schema(b, false)).collect();
                out.insert("anyOf".into(), Value::Array(rewritten));
            }
        }

        if is_object {
            self.object(&m, &mut out, &mut notes);
        }
        if is_array {
            let items = match m.get("items") {
                Some(v @ (Value::Object(_) | Value::Bool(_))) => self.schema(v, false),
                _ => any_value(),
            };
            out.insert("items".into(), items);
        }

        match types.as_slice() {
            [] => {}
            [t] => {
                out.insert("type".into(), t.as_str().into());
            }
            [a, b] if a == "null" || b == "null" => {
                let t = if a == "null" { b } else { a };
                out.insert("type".into(), json!([t, "null"]));
            }
            _ if out.contains_key("anyOf") => notes.keyword("type", json!(types)),
            _ => split_types(&types, &mut out),
        }

        if !root
            && !["type", "enum", "const", "anyOf", "$ref"]
                .iter()
                .any(|k| out.contains_key(*k))
        {
            out.insert("anyOf".into(), Value::Array(scalar_branches()));
            notes.sentence(ANY_NOTE);
        }
        notes.apply(&mut out);
        Value::Object(out)
    }

    /// Rewrites `node`, the definition `via` names merged with the keywords beside that `$ref`;
    /// when `via` is already being inlined further out, the `$ref` alone.
    fn inline(&mut self, node: &Value, root: bool, via: &Value) -> Value {
        let key = via.to_string();
        if !root && self.inlining.contains(&key) {
            return json!({"$ref": via});
        }
        self.inlining.push(key);
        let out = self.schema(node, root);
        self.inlining.pop();
        out
    }

    /// The definition a `$ref` names, as a schema object without its own `$defs`.
    fn target(&self, r: &Value) -> Option<Map<String, Value>> {
        let mut target = resolve(self.doc, r.as_str()?)?.as_object()?.clone();
        target.remove("$defs");
        Some(target)
    }

    fn object(&mut self, m: &Map<String, Value>, out: &mut Map<String, Value>, notes: &mut Notes) {
        let empty = Map::new();
        let props_in = match m.get("properties") {
            Some(Value::Object(p)) => p,
            Some(other) => {
                notes.keyword("properties", other.clone());
                &empty
            }
            None => &empty,
        };
        let required_in: Vec<&str> = m
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();

        let mut props = Map::new();
        for (name, sub) in props_in {
            if *sub == Value::Bool(false) {
                // The property must be absent, which the closed object already says.
                continue;
            }
            let mut s = self.schema(sub, false);
            if !required_in.contains(&name.as_str()) {
                s = nullable(s);
            }
            props.insert(name.clone(), s);
        }
        let mut required: Vec<String> = Vec::new();
        let mut undeclared: Vec<&str> = Vec::new();
        for name in &required_in {
            if props.contains_key(*name) {
                if !required.iter().any(|r| r.as_str() == *name) {
                    required.push((*name).to_owned());
                }
            } else {
                undeclared.push(*name);
            }
        }
        for name in props.keys() {
            if !required.contains(name) {
                required.push(name.clone());
            }
        }
        if !undeclared.is_empty() {
            notes.keyword("required", json!(undeclared));
        }
        match m.get("additionalProperties") {
            Some(Value::Bool(false)) => {}
            None | Some(Value::Bool(true)) => {
                if props_in.is_empty() {
                    notes.sentence(FREE_FORM_NOTE);
                }
            }
            Some(Value::Object(o)) if o.is_empty() => {
                if props_in.is_empty() {
                    notes.sentence(FREE_FORM_NOTE);
                }
            }
            Some(values) => notes.sentence(&format!(
                "Other keys, with values matching {values}, are accepted too; strict mode cannot \
                 express them, so they are left out."
            )),
        }
        out.insert("properties".into(), Value::Object(props));
        out.insert(
            "required".into(),
            Value::Array(required.into_iter().map(Value::String).collect()),
        );
        out.insert("additionalProperties".into(), false.into());
    }

    /// Whether no value can match two of `branches` once rewritten (objects closed, all
    /// properties required), so `anyOf` means the same as `oneOf`.
    fn disjoint(&self, branches: &[Value]) -> bool {
        let shapes: Vec<Shape> = branches.iter().map(|b| self.shape(b)).collect();
        shapes
            .iter()
            .enumerate()
            .all(|(i, a)| shapes[i + 1..].iter().all(|b| self.shapes_disjoint(a, b)))
    }

    fn shapes_disjoint(&self, a: &Shape, b: &Shape) -> bool {
        if let (Some(ta), Some(tb)) = (&a.types, &b.types)
            && !ta.iter().any(|x| tb.iter().any(|y| types_overlap(x, y)))
        {
            return true;
        }
        if let (Some(va), Some(vb)) = (&a.values, &b.values)
            && !va.iter().any(|v| vb.contains(v))
        {
            return true;
        }
        let (Some(pa), Some(pb)) = (&a.properties, &b.properties) else {
            return false;
        };
        if pa.keys().collect::<BTreeSet<_>>() != pb.keys().collect::<BTreeSet<_>>() {
            return true;
        }
        pa.iter().any(|(name, sa)| {
            let Some(sb) = pb.get(name) else { return true };
            let (x, y) = (self.shape(sa), self.shape(sb));
            matches!((x.values, y.values), (Some(vx), Some(vy)) if !vx.iter().any(|v| vy.contains(v)))
        })
    }

    /// What a branch says about the values it takes, as far as disjointness needs.
    fn shape(&self, schema: &Value) -> Shape {
        let mut node = schema;
        for _ in 0..MAX_REF_HOPS {
            match node.get("$ref").and_then(Value::as_str) {
                Some(r) => match resolve(self.doc, r) {
                    Some(t) => node = t,
                    None => return Shape::default(),
                },
                None => break,
            }
        }
        let Value::Object(m) = node else {
            return Shape::default();
        };
        let values: Option<Vec<Value>> = match (m.get("const"), m.get("enum")) {
            (Some(c), _) => Some(vec![c.clone()]),
            (None, Some(Value::Array(e))) => Some(e.clone()),
            _ => None,
        };
        let mut types: Option<BTreeSet<String>> = match m.get("type") {
            Some(Value::String(t)) => Some([t.clone()].into()),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => values
                .as_ref()
                .map(|vs| vs.iter().map(|v| json_type(v).to_owned()).collect()),
        };
        if types.is_none()
            && (m.contains_key("properties") || m.contains_key("additionalProperties"))
        {
            types = Some(["object".to_owned()].into());
        }
        let properties = match &types {
            Some(t) if t.len() == 1 && t.contains("object") => Some(
                m.get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(_, s)| **s != Value::Bool(false))
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect(),
            ),
            _ => None,
        };
        Shape {
            types,
            values,
            properties,
        }
    }
}

#[derive(Default)]
struct Shape {
    types: Option<BTreeSet<String>>,
    values: Option<Vec<Value>>,
    properties: Option<Map<String, Value>>,
}

fn types_overlap(a: &str, b: &str) -> bool {
    a == b || matches!((a, b), ("integer", "number") | ("number", "integer"))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    list.retain(|t| seen.insert(t.clone()));
}

/// The type a schema without `type` implies by its keywords: object or array (so that they are
/// closed and given items), the root always an object; otherwise none.
fn inferred_types(m: &Map<String, Value>, root: bool) -> Vec<String> {
    const OBJECT: [&str; 7] = [
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    ];
    const ARRAY: [&str; 6] = [
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "contains",
        "uniqueItems",
    ];
    let composite = ["enum", "const", "anyOf", "oneOf", "allOf"]
        .iter()
        .any(|k| m.contains_key(*k));
    if root || (!composite && OBJECT.iter().any(|k| m.contains_key(*k))) {
        vec!["object".into()]
    } else if !composite && ARRAY.iter().any(|k| m.contains_key(*k)) {
        vec!["array".into()]
    } else {
        Vec::new()
    }
}

/// Replaces a type list like `["string", "integer"]` (more than one type besides null) by
/// `anyOf` of one schema per type, each with the keywords that apply to it.
fn split_types(types: &[String], out: &mut Map<String, Value>) {
    let moved = |t: &str| -> &'static [&'static str] {
        match t {
            "string" => &["pattern", "format"],
            "number" | "integer" => &NUMBER_KEYWORDS,
            "array" => &["items", "minItems", "maxItems"],
            "object" => &["properties", "required", "additionalProperties"],
            _ => &[],
        }
    };
    let branches: Vec<Value> = types
        .iter()
        .map(|t| {
            let mut b = Map::new();
            b.insert("type".into(), t.as_str().into());
            for k in moved(t) {
                if let Some(v) = out.get(*k) {
                    b.insert((*k).into(), v.clone());
                }
            }
            Value::Object(b)
        })
        .collect();
    for t in types {
        for k in moved(t) {
            out.remove(*k);
        }
    }
    out.insert("anyOf".into(), Value::Array(branches));
}

/// A schema for "any value" as strict mode can say it.
fn any_value() -> Value {
    json!({"anyOf": scalar_branches(), "description": format!("({ANY_NOTE})")})
}

/// The `anyOf` branches standing for "any value": every scalar type.
fn scalar_branches() -> Vec<Value> {
    ["string", "number", "boolean", "null"]
        .into_iter()
        .map(|t| json!({"type": t}))
        .collect()
}

/// Whether `schema` (as rewritten) accepts `null`.
fn accepts_null(schema: &Value) -> bool {
    let Value::Object(m) = schema else {
        return *schema == Value::Bool(true);
    };
    if m.contains_key("$ref") {
        return false;
    }
    let type_ok = match m.get("type") {
        None => true,
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(a)) => a.iter().any(|t| t == "null"),
        Some(_) => false,
    };
    let enum_ok = m
        .get("enum")
        .and_then(Value::as_array)
        .is_none_or(|e| e.contains(&Value::Null));
    let const_ok = m.get("const").is_none_or(Value::is_null);
    let any_ok = m
        .get("anyOf")
        .and_then(Value::as_array)
        .is_none_or(|a| a.iter().any(accepts_null));
    type_ok && enum_ok && const_ok && any_ok
}

/// `schema` (as rewritten) made to accept `null` too, for a property that was optional.
fn nullable(schema: Value) -> Value {
    if accepts_null(&schema) {
        return schema;
    }
    let Value::Object(mut m) = schema else {
        return schema;
    };
    let null_schema = json!({"type": "null"});
    if m.contains_key("$ref") {
        return json!({"anyOf": [Value::Object(m), null_schema]});
    }
    let mut done = false;
    if let Some(t) = m.get_mut("type") {
        match t {
            Value::String(s) if s != "null" => *t = json!([s.as_str(), "null"]),
            Value::Array(a) if !a.iter().any(|x| x == "null") => a.push("null".into()),
            _ => {}
        }
        done = true;
    }
    if let Some(Value::Array(e)) = m.get_mut("enum") {
        if !e.contains(&Value::Null) {
            e.push(Value::Null);
        }
        done = true;
    }
    if let Some(c) = m.remove("const") {
        if c.is_null() {
            m.insert("const".into(), c);
        } else {
            m.insert("enum".into(), json!([c, null]));
        }
        done = true;
    }
    if let Some(Value::Array(a)) = m.get_mut("anyOf") {
        if !a.iter().any(accepts_null) {
            a.push(null_schema.clone());
        }
        done = true;
    }
    if done {
        return Value::Object(m);
    }
    let mut outer = Map::new();
    for k in ["description", "title"] {
        if let Some(v) = m.remove(k) {
            outer.insert(k.into(), v);
        }
    }
    outer.insert("anyOf".into(), json!([Value::Object(m), null_schema]));
    Value::Object(outer)
}

// ---------------------------------------------------------------------------------------------
// Notes: what the rewrite could not keep, as description text.

/// Keywords in the order their notes read best; others follow alphabetically.
const NOTE_ORDER: &[&str] = &[
    "minLength",
    "maxLength",
    "format",
    "pattern",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "prefixItems",
    "items",
    "contains",
    "minContains",
    "maxContains",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "if",
    "then",
    "else",
    "default",
    "examples",
    "deprecated",
    "readOnly",
];

#[derive(Default)]
struct Notes {
    keywords: Vec<(String, Value)>,
    sentences: Vec<String>,
    prompts: Vec<String>,
}

impl Notes {
    fn keyword(&mut self, k: &str, v: Value) {
        match (k, v) {
            ("x-prompt", Value::String(p)) => self.prompts.push(p),
            (k, v) => self.keywords.push((k.to_owned(), v)),
        }
    }

    fn sentence(&mut self, s: &str) {
        self.sentences.push(s.to_owned());
    }

    /// Appends the notes to `m`'s description: `<description> (<k>: <v>; ...) <sentences>
    /// Ask: "<x-prompt>"`. A description that is not a string becomes a note itself.
    fn apply(mut self, m: &mut Map<String, Value>) {
        if self.keywords.is_empty() && self.sentences.is_empty() && self.prompts.is_empty() {
            return;
        }
        let mut parts = Vec::new();
        match m.remove("description") {
            Some(Value::String(d)) if !d.trim().is_empty() => parts.push(d.trim_end().to_owned()),
            Some(Value::String(_)) | None => {}
            Some(other) => self.keywords.push(("description".into(), other)),
        }
        let rank = |k: &str| {
            NOTE_ORDER
                .iter()
                .position(|o| *o == k)
                .unwrap_or(NOTE_ORDER.len())
        };
        self.keywords
            .sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        if !self.keywords.is_empty() {
            let rendered: Vec<String> = self
                .keywords
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) if k == "format" => format!("{k}: {s}"),
                    _ => format!("{k}: {v}"),
                })
                .collect();
            parts.push(format!("({})", rendered.join("; ")));
        }
        for s in self.sentences {
            parts.push(format!("({s})"));
        }
        for p in self.prompts {
            parts.push(format!("Ask: \"{p}\""));
        }
        m.insert("description".into(), parts.join(" ").into());
    }
}

// ---------------------------------------------------------------------------------------------
// Schema structure: subschemas, JSON Pointers, definitions.

/// Calls `f` on each subschema directly below `m`, with its pointer relative to `m`.
fn for_each_subschema(m: &mut Map<String, Value>, f: &mut dyn FnMut(&str, &mut Value)) {
    const ONE: [&str; 11] = [
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "additionalItems",
    ];
    const MAP: [&str; 5] = [
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    ];
    const LIST: [&str; 5] = ["anyOf", "oneOf", "allOf", "prefixItems", "items"];
    for (k, v) in m.iter_mut() {
        let key = escape(k);
        let k = k.as_str();
        if ONE.contains(&k) && (v.is_object() || v.is_boolean()) {
            f(&format!("/{key}"), v);
        } else if MAP.contains(&k)
            && let Value::Object(children) = v
        {
            for (name, child) in children.iter_mut() {
                f(&format!("/{key}/{}", escape(name)), child);
            }
        } else if LIST.contains(&k)
            && let Value::Array(children) = v
        {
            for (i, child) in children.iter_mut().enumerate() {
                f(&format!("/{key}/{i}"), child);
            }
        }
    }
}

/// Escapes a key for a JSON Pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The value a local `$ref` (`#`, `#/...`) points to in `doc`.
fn resolve<'v>(doc: &'v Value, reference: &str) -> Option<&'v Value> {
    let fragment = percent_decode(reference.strip_prefix('#')?)?;
    if fragment.is_empty() {
        return Some(doc);
    }
    let mut node = doc;
    for segment in fragment.strip_prefix('/')?.split('/') {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        node = match node {
            Value::Object(m) => m.get(&segment)?,
            Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Moves `definitions` and every `$defs` below the root into the root's `$defs` (renaming on a
/// clash) and points the `$ref`s at their new places: strict mode documents `$defs` at the root.
fn normalize_defs(doc: &mut Value) {
    let Value::Object(root) = doc else { return };
    let mut moved = Vec::new();
    if matches!(root.get("definitions"), Some(Value::Object(_)))
        && let Some(Value::Object(defs)) = root.remove("definitions")
    {
        for (name, mut def) in defs {
            let at = format!("/definitions/{}", escape(&name));
            hoist_defs(&mut def, &at, &mut moved);
            moved.push((at, name, def));
        }
    }
    for_each_subschema(root, &mut |at, child| hoist_defs(child, at, &mut moved));
    if moved.is_empty() {
        return;
    }
    let Value::Object(defs) = root
        .entry("$defs")
        .or_insert_with(|| Value::Object(Map::new()))
    else {
        return;
    };
    let mut renames = Vec::new();
    for (at, name, def) in moved {
        let mut new = name.clone();
        let mut n = 2;
        while defs.contains_key(&new) {
            new = format!("{name}_{n}");
            n += 1;
        }
        renames.push((at, format!("/$defs/{}", escape(&new))));
        defs.insert(new, def);
    }
    rewrite_refs(doc, &renames);
}

/// Takes every `$defs`/`definitions` at or below `node` (at pointer `at`) out into `moved`.
fn hoist_defs(node: &mut Value, at: &str, moved: &mut Vec<(String, String, Value)>) {
    let Value::Object(m) = node else { return };
    for key in ["$defs", "definitions"] {
        if matches!(m.get(key), Some(Value::Object(_)))
            && let Some(Value::Object(defs)) = m.remove(key)
        {
            for (name, mut def) in defs {
                let def_at = format!("{at}/{key}/{}", escape(&name));
                hoist_defs(&mut def, &def_at, moved);
                moved.push((def_at, name, def));
            }
        }
    }
    for_each_subschema(m, &mut |rel, child| {
        hoist_defs(child, &format!("{at}{rel}"), moved);
    });
}

/// Points each `$ref` into a moved definition (`renames`: old pointer, new pointer) at its new
/// place; the longest matching old pointer wins.
fn rewrite_refs(node: &mut Value, renames: &[(String, String)]) {
    let Value::Object(m) = node else { return };
    if let Some(Value::String(r)) = m.get_mut("$ref")
        && let Some(pointer) = r.strip_prefix('#').and_then(percent_decode)
        && let Some((old, new)) = renames
            .iter()
            .filter(|(old, _)| {
                pointer == *old
                    || pointer
                        .strip_prefix(old.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(old, _)| old.len())
    {
        *r = format!("#{new}{}", &pointer[old.len()..]);
    }
    for_each_subschema(m, &mut |_, child| rewrite_refs(child, renames));
}

// ---------------------------------------------------------------------------------------------
// Check.

/// Every way `schema` breaks the OpenAI strict-mode rules (listed in the module
/// documentation), one readable line each: `[<rule>] at "<JSON Pointer>": <what is wrong>`
/// (the root's pointer is `""`). Empty when the schema complies.
///
/// Written from the rules alone, not from [`openai_strict`], so that it can check the rewrite.
pub fn strict_violations(schema: &Value) -> Vec<String> {
    let mut check = Check {
        root: schema,
        found: Vec::new(),
        properties: 0,
        enum_values: 0,
        chars: 0,
    };
    match schema {
        Value::Object(m) => {
            if m.get("type") != Some(&Value::String("object".into())) {
                check.report(
                    "root",
                    "",
                    "the root must be an object schema: \"type\": \"object\"".into(),
                );
            }
            if m.contains_key("anyOf") {
                check.report("root", "", "the root must not be anyOf".into());
            }
            if let Some(Value::Object(defs)) = m.get("$defs") {
                for (name, def) in defs {
                    check.chars += name.chars().count();
                    check.walk(def, &format!("/$defs/{}", escape(name)), 0);
                }
            }
        }
        _ => check.report(
            "root",
            "",
            "the root must be an object schema: \"type\": \"object\"".into(),
        ),
    }
    check.walk(schema, "", 0);
    if check.properties > MAX_PROPERTIES {
        let n = check.properties;
        check.report(
            "limits",
            "",
            format!("{n} properties in all; strict mode allows {MAX_PROPERTIES}"),
        );
    }
    if check.enum_values > MAX_ENUM_VALUES {
        let n = check.enum_values;
        check.report(
            "limits",
            "",
            format!("{n} enum values in all; strict mode allows {MAX_ENUM_VALUES}"),
        );
    }
    if check.chars > MAX_STRING_CHARS {
        let n = check.chars;
        check.report(
            "limits",
            "",
            format!(
                "{n} characters of property names, definition names, enum and const values; \
                 strict mode allows {MAX_STRING_CHARS}"
            ),
        );
    }
    check.found
}

/// The keywords strict mode supports (`$defs` only at the root, checked apart).
const STRICT_KEYWORDS: [&str; 20] = [
    "type",
    "description",
    "title",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
];

struct Check<'a> {
    root: &'a Value,
    found: Vec<String>,
    properties: usize,
    enum_values: usize,
    chars: usize,
}

impl Check<'_> {
    fn report(&mut self, rule: &str, at: &str, what: String) {
        self.found.push(format!("[{rule}] at {at:?}: {what}"));
    }

    /// Checks the schema at `at`; `depth` is how many object schemas enclose it.
    fn walk(&mut self, node: &Value, at: &str, depth: usize) {
        let Value::Object(m) = node else {
            self.report(
                "untyped",
                at,
                format!("{node} is not a schema object; strict mode needs a type here"),
            );
            return;
        };
        let is_root = at.is_empty();

        if let Some(r) = m.get("$ref") {
            let others: Vec<&str> = m
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "$ref")
                .collect();
            if !others.is_empty() {
                self.report(
                    "ref",
                    at,
                    format!(
                        "\"$ref\" must stand alone, but has beside it: {}",
                        others.join(", ")
                    ),
                );
            }
            match r.as_str() {
                Some(s) if s.starts_with('#') => {
                    if resolve(self.root, s).is_none() {
                        self.report("ref", at, format!("\"$ref\" {s:?} points to nothing"));
                    }
                }
                _ => self.report(
                    "ref",
                    at,
                    format!("\"$ref\" {r} is not a local reference (#...)"),
                ),
            }
        }

        let types: Vec<&str> = match m.get("type") {
            None => Vec::new(),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(list)) => {
                let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                let pair = names.len() == 2 && names.iter().filter(|t| **t == "null").count() == 1;
                if names.len() != list.len() || !(names.len() == 1 || pair) {
                    self.report(
                        "type",
                        at,
                        format!(
                            "a type list must be [<type>, \"null\"], not {}",
                            Value::Array(list.clone())
                        ),
                    );
                }
                names
            }
            Some(other) => {
                self.report(
                    "type",
                    at,
                    format!("\"type\" must be a string, not {other}"),
                );
                Vec::new()
            }
        };
        for t in &types {
            if !TYPE_NAMES.contains(t) {
                self.report(
                    "type",
                    at,
                    format!("{t:?} is not a type strict mode supports"),
                );
            }
        }
        if types.is_empty()
            && !["enum", "const", "anyOf", "$ref"]
                .iter()
                .any(|k| m.contains_key(*k))
        {
            self.report(
                "untyped",
                at,
                "no \"type\", \"enum\", \"const\", \"anyOf\" or \"$ref\"; strict mode cannot take \
                 a schema that allows anything"
                    .into(),
            );
        }
        let has = |t: &str| types.contains(&t);

        for (k, v) in m {
            let k = k.as_str();
            if k == "$defs" {
                if !is_root {
                    self.report("keyword", at, "\"$defs\" belongs at the root".into());
                }
                continue;
            }
            if !STRICT_KEYWORDS.contains(&k) {
                self.report(
                    "keyword",
                    at,
                    format!("{k:?} is not supported in strict mode"),
                );
                continue;
            }
            let needs = match k {
                "pattern" | "format" => Some("string"),
                "properties" | "required" | "additionalProperties" => Some("object"),
                "items" | "minItems" | "maxItems" => Some("array"),
                k if NUMBER_KEYWORDS.contains(&k) => Some("number"),
                _ => None,
            };
            if let Some(t) = needs {
                let ok = has(t) || (t == "number" && has("integer"));
                if !ok {
                    self.report(
                        "keyword",
                        at,
                        format!("{k:?} applies to type {t:?}, which this schema does not have"),
                    );
                }
            }
            match k {
                "description" | "title" if !v.is_string() => {
                    self.report("keyword", at, format!("{k:?} must be a string"));
                }
                "format" => match v.as_str() {
                    Some(f) if STRICT_FORMATS.contains(&f) => {}
                    _ => self.report(
                        "format",
                        at,
                        format!(
                            "format {v} is not supported; strict mode knows {}",
                            STRICT_FORMATS.join(", ")
                        ),
                    ),
                },
                "enum" => match v.as_array() {
                    Some(values) if !values.is_empty() => {
                        self.enum_values += values.len();
                        let chars: usize = values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.chars().count())
                            .sum();
                        self.chars += chars;
                        let strings = values.iter().filter(|v| v.is_string()).count();
                        if strings > LARGE_ENUM && chars > LARGE_ENUM_CHARS {
                            self.report(
                                "limits",
                                at,
                                format!(
                                    "an enum of {strings} strings may have {LARGE_ENUM_CHARS} \
                                     characters in all, not {chars}"
                                ),
                            );
                        }
                    }
                    _ => self.report("enum", at, "\"enum\" must be a non-empty list".into()),
                },
                "const" => {
                    if let Some(s) = v.as_str() {
                        self.chars += s.chars().count();
                    }
                }
                "anyOf" => match v.as_array() {
                    Some(branches) if !branches.is_empty() => {
                        for (i, b) in branches.iter().enumerate() {
                            self.walk(b, &format!("{at}/anyOf/{i}"), depth);
                        }
                    }
                    _ => self.report("anyOf", at, "\"anyOf\" must be a non-empty list".into()),
                },
                _ => {}
            }
        }

        if has("object") {
            let depth = depth + 1;
            if depth == MAX_OBJECT_DEPTH + 1 {
                self.report(
                    "limits",
                    at,
                    format!("objects nest more than {MAX_OBJECT_DEPTH} levels deep here"),
                );
            }
            match m.get("additionalProperties") {
                Some(Value::Bool(false)) => {}
                None => self.report(
                    "additionalProperties",
                    at,
                    "an object must set \"additionalProperties\": false".into(),
                ),
                Some(other) => self.report(
                    "additionalProperties",
                    at,
                    format!("an object must set \"additionalProperties\": false, not {other}"),
                ),
            }
            let required: Vec<&str> = m
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let empty = Map::new();
            let props = match m.get("properties") {
                Some(Value::Object(p)) => p,
                None => &empty,
                Some(other) => {
                    self.report(
                        "keyword",
                        at,
                        format!("\"properties\" must be an object, not {other}"),
                    );
                    &empty
                }
            };
            for (name, sub) in props {
                self.properties += 1;
                self.chars += name.chars().count();
                if !required.contains(&name.as_str()) {
                    self.report(
                        "required",
                        at,
                        format!(
                            "property {name:?} is not in \"required\"; every property must be \
                             (an optional one as nullable)"
                        ),
                    );
                }
                self.walk(sub, &format!("{at}/properties/{}", escape(name)), depth);
            }
            for name in required {
                if !props.contains_key(name) {
                    self.report(
                        "required",
                        at,
                        format!("\"required\" names {name:?}, which is not a property"),
                    );
                }
            }
        }
        if has("array") {
            match m.get("items") {
                Some(items) => self.walk(items, &format!("{at}/items"), depth),
                None => self.report("items", at, "an array must say its \"items\"".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input and output schemas of three real actions (from the descriptors the CLI reads).
    fn descriptors() -> Vec<(&'static str, Value, Value)> {
        vec![
            (
                "crm-lead",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "additionalProperties": false,
                    "description": "What the agent must collect.",
                    "properties": {
                        "company": {"description": "Their company, if they said.", "type": ["string", "null"]},
                        "email": {
                            "description": "Where the sales team can reach them.",
                            "format": "email",
                            "type": "string",
                            "x-prompt": "What email address should our sales team use to reach you?"
                        },
                        "inquiry": {"description": "What they asked about.", "type": ["string", "null"]},
                        "name": {
                            "description": "The person's name.",
                            "maxLength": 200,
                            "minLength": 1,
                            "type": "string",
                            "x-prompt": "What is your name?"
                        }
                    },
                    "required": ["name", "email"],
                    "title": "Lead",
                    "type": "object"
                }),
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "description": "What the agent gets back.",
                    "properties": {
                        "created_at": {"type": ["string", "null"]},
                        "id": {"description": "The CRM's id of the lead.", "type": "string"}
                    },
                    "required": ["id", "created_at"],
                    "title": "Created",
                    "type": "object"
                }),
            ),
            (
                "membership-verify",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "additionalProperties": false,
                    "description": "What the agent must collect.",
                    "properties": {
                        "date_of_birth": {
                            "description": "The member's date of birth, YYYY-MM-DD, to confirm identity.",
                            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                            "type": "string",
                            "x-prompt": "To confirm it's you, what is your date of birth (YYYY-MM-DD)?"
                        },
                        "member_id": {
                            "description": "The member's id, `M-` followed by digits.",
                            "pattern": "^M-[0-9]+$",
                            "type": "string",
                            "x-prompt": "What is your member ID? It starts with M-, like M-1001."
                        }
                    },
                    "required": ["member_id", "date_of_birth"],
                    "title": "Input",
                    "type": "object"
                }),
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "description": "What the agent gets back.",
                    "properties": {
                        "active": {"description": "Whether the membership is active now.", "type": "boolean"},
                        "expired_on": {"type": ["string", "null"]},
                        "member_id": {"type": "string"},
                        "plan": {"type": "string"},
                        "valid_until": {"type": ["string", "null"]}
                    },
                    "required": ["member_id", "active", "plan", "valid_until", "expired_on"],
                    "title": "Membership",
                    "type": "object"
                }),
            ),
            (
                "order-status",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "additionalProperties": false,
                    "description": "What the agent must collect.",
                    "properties": {
                        "order_id": {
                            "description": "The customer's 6-digit order number.",
                            "pattern": "^[0-9]{6}$",
                            "type": "string",
                            "x-prompt": "What is your 6-digit order number?"
                        }
                    },
                    "required": ["order_id"],
                    "title": "Input",
                    "type": "object"
                }),
                json!({
                    "$defs": {
                        "Item": {
                            "description": "One line of an order.",
                            "properties": {
                                "name": {"type": "string"},
                                "quantity": {"format": "uint32", "minimum": 0, "type": "integer"},
                                "sku": {"type": "string"}
                            },
                            "required": ["sku", "name", "quantity"],
                            "type": "object"
                        }
                    },
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "description": "What the agent gets back.",
                    "properties": {
                        "carrier": {"type": ["string", "null"]},
                        "eta": {
                            "description": "Estimated delivery date (YYYY-MM-DD), when known.",
                            "type": ["string", "null"]
                        },
                        "items": {"items": {"$ref": "#/$defs/Item"}, "type": "array"},
                        "order_id": {"type": "string"},
                        "status": {
                            "description": "`processing`, `shipped` or `delivered`.",
                            "type": "string"
                        },
                        "tracking_number": {"type": ["string", "null"]}
                    },
                    "required": ["order_id", "status", "carrier", "tracking_number", "items", "eta"],
                    "title": "Order",
                    "type": "object"
                }),
            ),
        ]
    }

    fn specs<'a>(d: &'a [(&'static str, Value, Value)]) -> Vec<ToolSpec<'a>> {
        d.iter()
            .map(|(name, input, output)| ToolSpec {
                name,
                description: "Does a thing",
                input_schema: input,
                output_schema: output,
            })
            .collect()
    }

    fn required_set(schema: &Value) -> BTreeSet<String> {
        schema["required"]
            .as_array()
            .expect("required is a list")
            .iter()
            .map(|v| v.as_str().expect("a name").to_owned())
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_descriptor_schema_rewritten_passes_the_check() {
        for (name, input, output) in descriptors() {
            for schema in [&input, &output] {
                // The originals break the rules, so a pass below means the rewrite did the work.
                assert!(
                    !strict_violations(schema).is_empty(),
                    "{name}: original passes"
                );
                let strict = openai_strict(schema);
                assert_eq!(
                    strict_violations(&strict),
                    Vec::<String>::new(),
                    "{name}: {strict:#}"
                );
                assert_eq!(
                    openai_strict(&strict),
                    strict,
                    "{name}: the rewrite is idempotent"
                );
            }
        }
        let d = descriptors();
        for format in ToolFormat::ALL {
            assert_eq!(
                problems(format, &specs(&d)),
                Vec::<String>::new(),
                "{format}"
            );
        }
    }

    #[test]
    fn crm_lead_input_rewritten_exactly() {
        let (_, input, _) = &descriptors()[0];
        assert_eq!(
            openai_strict(input),
            json!({
                "additionalProperties": false,
                "description": "What the agent must collect.",
                "properties": {
                    "company": {"description": "Their company, if they said.", "type": ["string", "null"]},
                    "email": {
                        "description": "Where the sales team can reach them. Ask: \"What email address should our sales team use to reach you?\"",
                        "format": "email",
                        "type": "string"
                    },
                    "inquiry": {"description": "What they asked about.", "type": ["string", "null"]},
                    "name": {
                        "description": "The person's name. (minLength: 1; maxLength: 200) Ask: \"What is your name?\"",
                        "type": "string"
                    }
                },
                "required": ["name", "email", "company", "inquiry"],
                "title": "Lead",
                "type": "object"
            })
        );
    }

    #[test]
    fn unsupported_keywords_move_into_the_description() {
        let strict = openai_strict(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The person's name.", "minLength": 1, "maxLength": 200},
                "colour": {"type": "string", "default": "red", "examples": ["red", "blue"]},
                "code": {"type": "string", "x-prompt": "Which code?", "x-internal": true}
            },
            "required": ["name", "colour", "code"]
        }));
        let props = &strict["properties"];
        assert_eq!(
            props["name"],
            json!({"type": "string", "description": "The person's name. (minLength: 1; maxLength: 200)"})
        );
        assert_eq!(
            props["colour"],
            json!({"type": "string", "description": "(default: \"red\"; examples: [\"red\",\"blue\"])"})
        );
        assert_eq!(
            props["code"],
            json!({"type": "string", "description": "(x-internal: true) Ask: \"Which code?\""})
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn format_uint32_goes_and_email_stays() {
        let strict = openai_strict(&descriptors()[2].2);
        assert_eq!(
            strict["$defs"]["Item"]["properties"]["quantity"],
            json!({"type": "integer", "minimum": 0, "description": "(format: uint32)"})
        );
        let strict = openai_strict(&descriptors()[0].1);
        assert_eq!(strict["properties"]["email"]["format"], "email");
    }

    #[test]
    fn defs_are_rewritten_and_stay_referenced() {
        let strict = openai_strict(&descriptors()[2].2);
        let item = &strict["$defs"]["Item"];
        assert_eq!(item["additionalProperties"], false);
        assert_eq!(required_set(item), set(&["sku", "name", "quantity"]));
        assert_eq!(item["description"], "One line of an order.");
        assert_eq!(
            strict["properties"]["items"],
            json!({"type": "array", "items": {"$ref": "#/$defs/Item"}})
        );
        assert!(strict.get("$schema").is_none());
    }

    #[test]
    fn nested_object_in_array_items_is_closed_and_fully_required() {
        let strict = openai_strict(&json!({
            "type": "object",
            "properties": {
                "lines": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"sku": {"type": "string"}, "note": {"type": "string"}},
                        "required": ["sku"]
                    }
                }
            },
            "required": ["lines"]
        }));
        let item = &strict["properties"]["lines"]["items"];
        assert_eq!(item["additionalProperties"], false);
        assert_eq!(required_set(item), set(&["sku", "note"]));
        assert_eq!(item["properties"]["sku"], json!({"type": "string"}));
        assert_eq!(
            item["properties"]["note"],
            json!({"type": ["string", "null"]})
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn optional_fields_become_nullable_once() {
        let strict = openai_strict(&json!({
            "type": "object",
            "properties": {
                "already": {"type": ["string", "null"]},
                "any_of": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "plain": {"type": "integer", "description": "A count."},
                "choice": {"type": "string", "enum": ["a", "b"]},
                "fixed": {"const": "x"}
            }
        }));
        let props = &strict["properties"];
        assert_eq!(props["already"], json!({"type": ["string", "null"]}));
        assert_eq!(
            props["any_of"],
            json!({"anyOf": [{"type": "integer"}, {"type": "null"}]})
        );
        assert_eq!(
            props["plain"],
            json!({"type": ["integer", "null"], "description": "A count."})
        );
        assert_eq!(
            props["choice"],
            json!({"type": ["string", "null"], "enum": ["a", "b", null]})
        );
        assert_eq!(props["fixed"], json!({"enum": ["x", null]}));
        assert_eq!(
            required_set(&strict),
            set(&["already", "any_of", "plain", "choice", "fixed"])
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn optional_ref_becomes_any_of_with_null() {
        let strict = openai_strict(&json!({
            "type": "object",
            "$defs": {
                "Address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["street"]
                }
            },
            "properties": {
                "home": {"$ref": "#/$defs/Address"},
                "work": {"$ref": "#/$defs/Address"}
            },
            "required": ["home"]
        }));
        assert_eq!(
            strict["properties"]["home"],
            json!({"$ref": "#/$defs/Address"})
        );
        assert_eq!(
            strict["properties"]["work"],
            json!({"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]})
        );
        let address = &strict["$defs"]["Address"];
        assert_eq!(address["additionalProperties"], false);
        assert_eq!(required_set(address), set(&["street", "zip"]));
        assert_eq!(
            address["properties"]["zip"]["type"],
            json!(["string", "null"])
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn ref_with_keywords_beside_it_is_inlined() {
        let strict = openai_strict(&json!({
            "type": "object",
            "$defs": {"Id": {"type": "string", "pattern": "^[0-9]+$"}},
            "properties": {"id": {"$ref": "#/$defs/Id", "description": "The id."}},
            "required": ["id"]
        }));
        assert_eq!(
            strict["properties"]["id"],
            json!({"type": "string", "pattern": "^[0-9]+$", "description": "The id."})
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn recursive_ref_with_keywords_beside_it_is_inlined_once() {
        // What schemars writes for `struct Node { /// The next one. next: Box<Node>, other: ... }`:
        // two self-references with descriptions; inlining them naively never ends.
        let node = json!({
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "next": {"$ref": "#/$defs/Node", "description": "The next one."},
                "other": {"$ref": "#/$defs/Node", "description": "Another one."}
            },
            "required": ["label", "next", "other"]
        });
        let strict = openai_strict(&json!({
            "type": "object",
            "$defs": {"Node": node},
            "properties": {"head": {"$ref": "#/$defs/Node", "description": "The first."}},
            "required": ["head"]
        }));
        let head = &strict["properties"]["head"];
        assert_eq!(head["description"], "The first.");
        assert_eq!(head["additionalProperties"], false);
        assert_eq!(head["properties"]["next"], json!({"$ref": "#/$defs/Node"}));
        assert_eq!(head["properties"]["other"], json!({"$ref": "#/$defs/Node"}));
        let def = &strict["$defs"]["Node"];
        assert_eq!(def["properties"]["next"]["description"], "The next one.");
        assert_eq!(
            def["properties"]["next"]["properties"]["next"],
            json!({"$ref": "#/$defs/Node"})
        );
        assert!(strict_violations(&strict).is_empty(), "{strict:#}");
    }

    #[test]
    fn definitions_and_nested_defs_move_to_the_root() {
        let strict = openai_strict(&json!({
            "type": "object",
            "definitions": {"A": {"type": "string"}},
            "properties": {
                "a": {"$ref": "#/definitions/A"},
                "b": {
                    "type": "object",
                    "$defs": {"A": {"type": "integer"}},
                    "properties": {"n": {"$ref": "#/properties/b/$defs/A"}},
                    "required": ["n"]
                }
            },
            "required": ["a", "b"]
        }));
        assert_eq!(strict["properties"]["a"], json!({"$ref": "#/$defs/A"}));
        assert_eq!(
            strict["properties"]["b"]["properties"]["n"],
            json!({"$ref": "#/$defs/A_2"})
        );
        assert_eq!(strict["$defs"]["A"], json!({"type": "string"}));
        assert_eq!(strict["$defs"]["A_2"], json!({"type": "integer"}));
        assert!(strict_violations(&strict).is_empty(), "{strict:#}");
    }

    #[test]
    fn refs_are_json_pointers_in_uri_fragments() {
        let strict = openai_strict(&json!({
            "type": "object",
            "$defs": {"A B": {"type": "string"}, "x/y": {"type": "integer"}},
            "properties": {
                "a": {"$ref": "#/$defs/A%20B", "description": "Spaced."},
                "b": {"$ref": "#/$defs/x~1y", "description": "Slashed."}
            },
            "required": ["a", "b"]
        }));
        assert_eq!(
            strict["properties"]["a"],
            json!({"type": "string", "description": "Spaced."})
        );
        assert_eq!(
            strict["properties"]["b"],
            json!({"type": "integer", "description": "Slashed."})
        );
        assert!(strict_violations(&strict).is_empty());
        assert!(resolve(&strict, "#/$defs/A%2").is_none());
    }

    #[test]
    fn one_of_becomes_any_of_and_says_so_when_branches_overlap() {
        // serde's internally tagged enum: the tag tells the branches apart.
        let tagged = openai_strict(&json!({
            "type": "object",
            "properties": {
                "pay": {
                    "oneOf": [
                        {"type": "object", "properties": {"kind": {"const": "card"}, "last4": {"type": "string"}}, "required": ["kind", "last4"]},
                        {"type": "object", "properties": {"kind": {"const": "iban"}, "last4": {"type": "string"}}, "required": ["kind", "last4"]}
                    ]
                }
            },
            "required": ["pay"]
        }));
        let pay = &tagged["properties"]["pay"];
        assert!(pay.get("oneOf").is_none());
        assert_eq!(pay["anyOf"].as_array().map(Vec::len), Some(2));
        assert_eq!(pay["anyOf"][0]["additionalProperties"], false);
        assert!(pay.get("description").is_none(), "{pay:#}");
        assert!(strict_violations(&tagged).is_empty());

        // A string and a date-time string overlap: anyOf would accept what oneOf rejects.
        let overlapping = openai_strict(&json!({
            "type": "object",
            "properties": {"when": {"oneOf": [{"type": "string"}, {"type": "string", "format": "date-time"}], "description": "When."}},
            "required": ["when"]
        }));
        assert_eq!(
            overlapping["properties"]["when"],
            json!({
                "anyOf": [{"type": "string"}, {"type": "string", "format": "date-time"}],
                "description": "When. (Exactly one of the alternatives must match.)"
            })
        );
        assert!(strict_violations(&overlapping).is_empty());
    }

    #[test]
    fn all_of_of_one_merges_and_longer_goes_to_the_description() {
        let strict = openai_strict(&json!({
            "type": "object",
            "$defs": {"Code": {"type": "string", "pattern": "^[A-Z]+$"}},
            "properties": {
                "code": {"allOf": [{"$ref": "#/$defs/Code"}], "description": "A code."},
                "n": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 9}]}
            },
            "required": ["code", "n"]
        }));
        assert_eq!(
            strict["properties"]["code"],
            json!({"type": "string", "pattern": "^[A-Z]+$", "description": "A code."})
        );
        assert_eq!(
            strict["properties"]["n"],
            json!({"type": "integer", "description": "(allOf: [{\"minimum\":1},{\"maximum\":9}])"})
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn open_objects_are_closed_and_maps_described() {
        let strict = openai_strict(&json!({
            "type": "object",
            "properties": {
                "open": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": true},
                "tags": {"type": "object", "additionalProperties": {"type": "integer"}},
                "anything": {"type": "object"}
            },
            "required": ["open", "tags", "anything"]
        }));
        let props = &strict["properties"];
        assert_eq!(
            props["open"],
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false})
        );
        assert_eq!(
            props["tags"],
            json!({
                "type": "object",
                "properties": {},
                "required": [],
                "additionalProperties": false,
                "description": "(Other keys, with values matching {\"type\":\"integer\"}, are accepted too; strict mode cannot express them, so they are left out.)"
            })
        );
        assert_eq!(
            props["anything"]["description"],
            "(Free-form object: strict mode cannot send keys that are not named, so only an empty object can be sent.)"
        );
        assert!(strict_violations(&strict).is_empty());
    }

    #[test]
    fn any_value_and_type_lists_become_any_of() {
        let strict = openai_strict(&json!({
            "type": "object",
            "properties": {
                "blob": true,
                "loose": {"description": "Anything."},
                "id": {"type": ["string", "integer"], "pattern": "^x", "minimum": 1}
            },
            "required": ["blob", "loose", "id"]
        }));
        let props = &strict["properties"];
        let scalars =
            json!([{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]);
        assert_eq!(props["blob"]["anyOf"], scalars);
        assert_eq!(
            props["loose"],
            json!({"anyOf": scalars, "description": format!("Anything. ({ANY_NOTE})")})
        );
        assert_eq!(
            props["id"],
            json!({"anyOf": [{"type": "string", "pattern": "^x"}, {"type": "integer", "minimum": 1}]})
        );
        assert!(strict_violations(&strict).is_empty());
    }

    /// One schema breaking each rule; the check must name the rule and the place.
    #[test]
    fn the_check_catches_each_rule() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "root not an object",
                json!({"type": "array", "items": {"type": "string"}}),
                "[root]",
                "\"\"",
            ),
            (
                "root anyOf",
                json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false, "anyOf": [{"type": "object", "properties": {}, "required": [], "additionalProperties": false}]}),
                "[root]",
                "\"\"",
            ),
            (
                "additionalProperties missing",
                json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}, "required": []}}, "required": ["a"], "additionalProperties": false}),
                "[additionalProperties]",
                "\"/properties/a\"",
            ),
            (
                "additionalProperties in array items",
                json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": "object", "properties": {}, "required": [], "additionalProperties": true}}}, "required": ["l"], "additionalProperties": false}),
                "[additionalProperties]",
                "\"/properties/l/items\"",
            ),
            (
                "property not required",
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": [], "additionalProperties": false}),
                "[required]",
                "\"\"",
            ),
            (
                "unsupported keyword",
                json!({"type": "object", "properties": {"a": {"type": "string", "minLength": 1}}, "required": ["a"], "additionalProperties": false}),
                "[keyword]",
                "\"/properties/a\"",
            ),
            (
                "x-prompt",
                json!({"type": "object", "properties": {"a": {"type": "string", "x-prompt": "?"}}, "required": ["a"], "additionalProperties": false}),
                "[keyword]",
                "\"/properties/a\"",
            ),
            (
                "$schema",
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {}, "required": [], "additionalProperties": false}),
                "[keyword]",
                "\"\"",
            ),
            (
                "format",
                json!({"type": "object", "properties": {"n": {"type": "string", "format": "uint32"}}, "required": ["n"], "additionalProperties": false}),
                "[format]",
                "\"/properties/n\"",
            ),
            (
                "keyword for another type",
                json!({"type": "object", "properties": {"n": {"type": "integer", "pattern": "^1"}}, "required": ["n"], "additionalProperties": false}),
                "[keyword]",
                "\"/properties/n\"",
            ),
            (
                "type union",
                json!({"type": "object", "properties": {"n": {"type": ["string", "integer"]}}, "required": ["n"], "additionalProperties": false}),
                "[type]",
                "\"/properties/n\"",
            ),
            (
                "unknown type",
                json!({"type": "object", "properties": {"n": {"type": "float"}}, "required": ["n"], "additionalProperties": false}),
                "[type]",
                "\"/properties/n\"",
            ),
            (
                "ref beside keywords",
                json!({"type": "object", "$defs": {"A": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/A", "description": "x"}}, "required": ["a"], "additionalProperties": false}),
                "[ref]",
                "\"/properties/a\"",
            ),
            (
                "ref to nothing",
                json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}, "required": ["a"], "additionalProperties": false}),
                "[ref]",
                "\"/properties/a\"",
            ),
            (
                "untyped",
                json!({"type": "object", "properties": {"a": {"description": "Anything."}}, "required": ["a"], "additionalProperties": false}),
                "[untyped]",
                "\"/properties/a\"",
            ),
            (
                "boolean schema",
                json!({"type": "object", "properties": {"a": true}, "required": ["a"], "additionalProperties": false}),
                "[untyped]",
                "\"/properties/a\"",
            ),
            (
                "array without items",
                json!({"type": "object", "properties": {"l": {"type": "array"}}, "required": ["l"], "additionalProperties": false}),
                "[items]",
                "\"/properties/l\"",
            ),
            (
                "nested $defs",
                json!({"type": "object", "properties": {"a": {"type": "string", "$defs": {}}}, "required": ["a"], "additionalProperties": false}),
                "[keyword]",
                "\"/properties/a\"",
            ),
            (
                "defs are checked",
                json!({"type": "object", "$defs": {"D": {"type": "object", "properties": {}, "required": []}}, "properties": {}, "required": [], "additionalProperties": false}),
                "[additionalProperties]",
                "\"/$defs/D\"",
            ),
            (
                "anyOf branches are checked",
                json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]}}, "required": ["a"], "additionalProperties": false}),
                "[keyword]",
                "\"/properties/a/anyOf/0\"",
            ),
            (
                "empty enum",
                json!({"type": "object", "properties": {"a": {"type": "string", "enum": []}}, "required": ["a"], "additionalProperties": false}),
                "[enum]",
                "\"/properties/a\"",
            ),
        ];
        for (what, schema, rule, at) in cases {
            let found = strict_violations(&schema);
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(rule) && f.contains(&format!("at {at}:"))),
                "{what}: expected {rule} at {at}, got {found:#?}"
            );
        }
    }

    #[test]
    fn the_check_enforces_the_limits() {
        let mut node = json!({"type": "string"});
        for _ in 0..11 {
            node = json!({"type": "object", "properties": {"x": node}, "required": ["x"], "additionalProperties": false});
        }
        let found = strict_violations(&node);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("[limits] at \"/properties/x/properties/x/properties/x/properties/x/properties/x/properties/x/properties/x/properties/x/properties/x/properties/x\":"));

        let values: Vec<Value> = (0..1001).map(|i| json!(i)).collect();
        let many = json!({"type": "object", "properties": {"n": {"type": "integer", "enum": values}}, "required": ["n"], "additionalProperties": false});
        let found = strict_violations(&many);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("[limits] at \"\": 1001 enum values")),
            "{found:#?}"
        );

        let long: Vec<Value> = (0..300).map(|i| json!(format!("{i:0>60}"))).collect();
        let wide = json!({"type": "object", "properties": {"s": {"type": "string", "enum": long}}, "required": ["s"], "additionalProperties": false});
        let found = strict_violations(&wide);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("[limits] at \"/properties/s\": an enum of 300 strings")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_compliant_schema_has_no_violations() {
        let schema = json!({
            "type": "object",
            "title": "T",
            "$defs": {"N": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}]}}, "required": ["next"], "additionalProperties": false}},
            "properties": {
                "s": {"type": ["string", "null"], "pattern": "^a", "format": "uuid", "description": "d"},
                "n": {"type": "number", "minimum": 0, "exclusiveMaximum": 5, "multipleOf": 0.5},
                "e": {"enum": ["a", "b"]},
                "c": {"const": 3},
                "l": {"type": "array", "items": {"$ref": "#/$defs/N"}, "minItems": 1, "maxItems": 3},
                "r": {"$ref": "#"}
            },
            "required": ["s", "n", "e", "c", "l", "r"],
            "additionalProperties": false
        });
        assert_eq!(strict_violations(&schema), Vec::<String>::new());
        assert_eq!(
            openai_strict(&schema),
            schema,
            "a compliant schema is left alone"
        );
    }

    #[test]
    fn formats_parse_and_print() {
        for f in ToolFormat::ALL {
            assert_eq!(f.to_string().parse::<ToolFormat>(), Ok(f));
        }
        assert_eq!("OpenAI".parse::<ToolFormat>(), Ok(ToolFormat::OpenAi));
        assert_eq!(
            "gemini".parse::<ToolFormat>(),
            Err("unknown tool format \"gemini\"; use one of: openai, anthropic, mcp".into())
        );
    }

    #[test]
    fn openai_shape() {
        let d = descriptors();
        let out = export(ToolFormat::OpenAi, &specs(&d));
        assert_eq!(out.as_array().map(Vec::len), Some(3));
        let tool = &out[2];
        assert_eq!(tool.as_object().map(Map::len), Some(2));
        assert_eq!(tool["type"], "function");
        let f = &tool["function"];
        assert_eq!(f.as_object().map(Map::len), Some(4));
        assert_eq!(f["name"], "order-status");
        assert_eq!(f["description"], "Does a thing");
        assert_eq!(f["strict"], true);
        assert_eq!(f["parameters"], openai_strict(&d[2].1));
        assert_eq!(
            f["parameters"]["properties"]["order_id"]["description"],
            "The customer's 6-digit order number. Ask: \"What is your 6-digit order number?\""
        );
    }

    #[test]
    fn anthropic_shape() {
        let d = descriptors();
        let out = export(ToolFormat::Anthropic, &specs(&d));
        let tool = out[0].as_object().expect("a tool object");
        assert_eq!(tool.len(), 3);
        assert_eq!(tool["name"], "crm-lead");
        assert_eq!(tool["description"], "Does a thing");
        let schema = tool["input_schema"].as_object().expect("a schema object");
        assert_eq!(schema["type"], "object");
        assert!(!schema.contains_key("$schema"));
        assert_eq!(schema["title"], "Lead");
        assert_eq!(schema["description"], "What the agent must collect.");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["name", "email"]));
        assert_eq!(
            schema["properties"]["name"],
            json!({
                "type": "string",
                "description": "The person's name. Ask: \"What is your name?\"",
                "minLength": 1,
                "maxLength": 200
            })
        );
        assert_eq!(
            schema["properties"]["email"],
            json!({
                "type": "string",
                "format": "email",
                "description": "Where the sales team can reach them. Ask: \"What email address should our sales team use to reach you?\""
            })
        );
        assert_eq!(
            schema["properties"]["company"],
            json!({"description": "Their company, if they said.", "type": ["string", "null"]})
        );

        // anyOf at the top level is refused by the API: it goes to the description.
        let input = json!({"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"required": ["a"]}]});
        let output = json!({"type": "object"});
        let tools = [ToolSpec {
            name: "x",
            description: "",
            input_schema: &input,
            output_schema: &output,
        }];
        let out = export(ToolFormat::Anthropic, &tools);
        assert_eq!(
            out[0],
            json!({
                "name": "x",
                "input_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "description": "(anyOf: [{\"required\":[\"a\"]}])"
                }
            })
        );
    }

    #[test]
    fn mcp_shape() {
        let d = descriptors();
        let out = export(ToolFormat::Mcp, &specs(&d));
        let tool = out[2].as_object().expect("a tool object");
        assert_eq!(tool.len(), 4);
        assert_eq!(tool["name"], "order-status");
        assert_eq!(tool["description"], "Does a thing");
        let input = &tool["inputSchema"];
        assert_eq!(input["type"], "object");
        assert_eq!(
            input["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(input["required"], json!(["order_id"]));
        assert_eq!(
            input["properties"]["order_id"],
            json!({
                "description": "The customer's 6-digit order number.",
                "pattern": "^[0-9]{6}$",
                "type": "string",
                "x-prompt": "What is your 6-digit order number?"
            })
        );
        // Both schemas go as they are; the output schema is an object schema.
        assert_eq!(*input, d[2].1);
        assert_eq!(tool["outputSchema"], d[2].2);

        // An output that is not an object cannot be MCP structured content: no outputSchema.
        let input = json!({"type": "object", "properties": {}});
        let output = json!({"type": "array", "items": {"type": "string"}});
        let tools = [ToolSpec {
            name: "list-things",
            description: "Lists.",
            input_schema: &input,
            output_schema: &output,
        }];
        let out = export(ToolFormat::Mcp, &tools);
        assert_eq!(
            out[0],
            json!({"name": "list-things", "description": "Lists.", "inputSchema": {"type": "object", "properties": {}}})
        );
    }

    #[test]
    fn problems_name_bad_and_duplicate_names() {
        let input = json!({"type": "object", "properties": {}});
        let output = json!({"type": "object"});
        let spec = |name| ToolSpec {
            name,
            description: "",
            input_schema: &input,
            output_schema: &output,
        };
        let long = "a".repeat(65);
        let tools = [
            spec("ok-name"),
            spec("ok-name"),
            spec("has space"),
            spec("dot.ted"),
            spec(&long),
        ];

        let openai = problems(ToolFormat::OpenAi, &tools);
        assert_eq!(
            openai,
            vec![
                "ok-name: the name is used by more than one tool; tool names must be unique"
                    .to_owned(),
                "has space: not a valid openai tool name; it must match ^[a-zA-Z0-9_-]{1,64}$"
                    .to_owned(),
                "dot.ted: not a valid openai tool name; it must match ^[a-zA-Z0-9_-]{1,64}$"
                    .to_owned(),
                format!(
                    "{long}: not a valid openai tool name; it must match ^[a-zA-Z0-9_-]{{1,64}}$"
                ),
            ]
        );
        let mcp = problems(ToolFormat::Mcp, &tools);
        assert_eq!(mcp.len(), 2, "{mcp:#?}"); // the duplicate and the space; dots and 65 are fine
        let anthropic = problems(ToolFormat::Anthropic, &tools);
        assert_eq!(anthropic.len(), 3, "{anthropic:#?}"); // duplicate, space, dot

        let bad_root = json!({"type": "array", "items": {"type": "string"}});
        let tools = [ToolSpec {
            name: "a",
            description: "",
            input_schema: &bad_root,
            output_schema: &output,
        }];
        for format in ToolFormat::ALL {
            assert!(!problems(format, &tools).is_empty(), "{format}");
        }
    }
}
