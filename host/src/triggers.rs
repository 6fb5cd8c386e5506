//! On-prompt actions: when a conversation message fires one, and what values it carries.
//!
//! An on-prompt action (`trigger.kind = "on-prompt"` in `action.toml`) fires on a message when
//! its conditions hold ([`matches()`], [`eligible`]); the host then pulls input values out of the
//! message ([`Extractor`]) before the input gate checks them. Everything here is pure: no I/O,
//! no clock, no randomness, so the same message always gives the same answer.
//!
//! Errors are sentences naming the manifest field (`trigger.patterns[0]`,
//! `inputs.order_id.extract`) and the fix, ready to be wrapped in a load error.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

/// An on-prompt action's conditions, compiled.
///
/// Built once per action at load time with [`Conditions::compile`], so that a message is checked
/// without compiling anything. The fields mirror `[trigger]` in `action.toml`.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// Intents supplied by the agent that fire the action, as written; compared
    /// case-insensitively. Default: none.
    pub intents: Vec<String>,
    /// Regular expressions over the user's message that fire the action. They are not anchored
    /// and are case-sensitive unless they say `(?i)`. Default: none.
    pub patterns: Vec<Pattern>,
    /// Conversation variables that must be present and not null for the action to fire, so that
    /// an action depending on an earlier one (a logged-in `customer_id`, say) waits for it.
    /// Default: none.
    pub requires: Vec<String>,
    /// Order among actions firing on the same message: higher first, ties broken by name.
    /// Default 0.
    pub priority: i32,
}

impl Conditions {
    /// Compiles the `[trigger]` conditions of one action.
    ///
    /// Checking here, at load time, means a bad pattern stops the action from loading instead of
    /// silently never firing.
    ///
    /// # Errors
    /// A sentence naming the field: a pattern that is not a valid regular expression, or an
    /// intent or required variable that is empty or blank.
    pub fn compile(
        intents: &[String],
        patterns: &[String],
        requires: &[String],
        priority: i32,
    ) -> Result<Self, String> {
        for (i, intent) in intents.iter().enumerate() {
            if intent.trim().is_empty() {
                return Err(format!(
                    "trigger.intents[{i}] is empty; write the intent's name, e.g. \"order-status\""
                ));
            }
        }
        for (i, name) in requires.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(format!(
                    "trigger.requires[{i}] is empty; write the conversation variable's name, \
                     e.g. \"customer_id\""
                ));
            }
        }
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Pattern::new(format!("trigger.patterns[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            intents: intents.to_vec(),
            patterns,
            requires: requires.to_vec(),
            priority,
        })
    }

    /// Compiles every pattern now (they are otherwise compiled at their first message), so
    /// `callout check` reports one that is too large to compile before it is served.
    ///
    /// # Errors
    /// The first pattern that does not compile, as [`Pattern::compile_now`] says it.
    pub fn compile_now(&self) -> Result<(), String> {
        self.patterns.iter().try_for_each(Pattern::compile_now)
    }

    /// Names the file the patterns come from in their messages (`<owner>: trigger.patterns[0]`),
    /// so a pattern that fails at its first message is logged with its manifest.
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.patterns = self
            .patterns
            .into_iter()
            .map(|p| p.owned_by(owner))
            .collect();
        self
    }
}

/// A regular expression from a manifest field, syntax-checked at load and compiled at its first
/// use.
///
/// Why lazily: compiling a Unicode-aware pattern (`\b`, `\d`, `(?i)`) costs 40–150 µs, so the
/// three of order-status were a third of its cached load, while most actions' patterns see few
/// messages. The syntax is checked at load (a bad pattern still stops the action from
/// loading); what only compiling can find is a pattern too large for the regex size limit.
/// That is reported by `callout check` ([`Pattern::compile_now`]), and when served such a pattern
/// is logged once, naming its field, and never matches. Clones share the compiled form.
#[derive(Debug, Clone)]
pub struct Pattern {
    field: Arc<str>,
    source: Arc<str>,
    compiled: Arc<OnceLock<Option<Regex>>>,
}

impl Pattern {
    /// A pattern for manifest field `field` (`trigger.patterns[0]`), its syntax checked.
    ///
    /// # Errors
    /// A sentence naming the field when `source` is not a valid regular expression.
    pub fn new(field: String, source: &str) -> Result<Self, String> {
        check_syntax(source).map_err(|m| format!("{field}: {m}"))?;
        Ok(Self {
            field: field.into(),
            source: source.into(),
            compiled: Arc::default(),
        })
    }

    /// The same pattern, its field prefixed with `owner` (a manifest path) in messages.
    pub fn owned_by(self, owner: &str) -> Self {
        Self {
            field: format!("{owner}: {}", self.field).into(),
            ..self
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The compiled expression, compiling it on the first call; `None` for a pattern that does
    /// not compile (logged once).
    pub fn regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| match compile_regex(&self.source) {
                Ok(re) => Some(re),
                Err(m) => {
                    tracing::error!(field = %self.field, "{}: {m}; it never matches until fixed (`callout check` reports it)", self.field);
                    None
                }
            })
            .as_ref()
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex().is_some_and(|re| re.is_match(text))
    }

    /// Compiles the pattern now, if it is not yet compiled.
    ///
    /// # Errors
    /// A sentence naming the field, when it does not compile (a size limit).
    pub fn compile_now(&self) -> Result<(), String> {
        match self.compiled.get() {
            Some(Some(_)) => Ok(()),
            _ => compile_regex(&self.source)
                .map(|re| {
                    let _ = self.compiled.set(Some(re));
                })
                .map_err(|m| format!("{}: {m}", self.field)),
        }
    }
}

/// Whether the action fires for this message.
///
/// It fires when (some intent supplied by the agent is one of the action's `intents`, compared
/// case-insensitively, OR some pattern matches the message) AND every `requires` variable is
/// present in `variables` and not null (an empty string or `false` counts as present). An action
/// with neither intents nor patterns never fires by message: `requires` alone is not a trigger.
pub fn matches(
    c: &Conditions,
    message: &str,
    intents: &[String],
    variables: &Map<String, Value>,
) -> bool {
    let by_intent = c
        .intents
        .iter()
        .any(|ours| intents.iter().any(|theirs| same_intent(ours, theirs)));
    let fired = by_intent || c.patterns.iter().any(|p| p.is_match(message));
    fired
        && c.requires
            .iter()
            .all(|name| variables.get(name).is_some_and(|v| !v.is_null()))
}

/// The names of the actions that fire for this message, in the order to run them.
///
/// Ordered by priority (higher first), ties by name ascending, so the order never depends on
/// the order actions were loaded in. Each name appears at most once: if a name is given twice,
/// its highest-priority firing entry counts.
pub fn eligible<'a>(
    actions: impl IntoIterator<Item = (&'a str, &'a Conditions)>,
    message: &str,
    intents: &[String],
    variables: &Map<String, Value>,
) -> Vec<&'a str> {
    let mut fired: Vec<(i32, &'a str)> = actions
        .into_iter()
        .filter(|(_, c)| matches(c, message, intents, variables))
        .map(|(name, c)| (c.priority, name))
        .collect();
    fired.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut seen = BTreeSet::new();
    fired
        .into_iter()
        .filter(|(_, name)| seen.insert(*name))
        .map(|(_, name)| name)
        .collect()
}

/// Pulls input values out of a user message with each field's `extract` regex.
///
/// A field's value is the first capture group of the regex (or the whole match when the regex
/// has no group), taken from the first match where it is non-empty: a match whose group did not
/// take part or captured nothing is skipped. Values are JSON strings as written in the message;
/// converting them to the field's type and validating them is the input gate's job. Built once
/// per action at load time; the default extracts nothing.
#[derive(Debug, Clone, Default)]
pub struct Extractor {
    fields: Vec<(String, Pattern)>,
}

impl Extractor {
    /// Compiles `(field, extract regex)` pairs.
    ///
    /// # Errors
    /// A sentence naming `inputs.<field>.extract`: a regex that does not compile, or a field
    /// listed twice.
    pub fn compile(fields: &[(String, String)]) -> Result<Self, String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(fields.len());
        for (field, pattern) in fields {
            if !seen.insert(field.as_str()) {
                return Err(format!(
                    "inputs.{field}.extract is given twice; keep one regular expression per field"
                ));
            }
            let re = Pattern::new(format!("inputs.{field}.extract"), pattern)?;
            out.push((field.clone(), re));
        }
        Ok(Self { fields: out })
    }

    /// Compiles every pattern now; see [`Conditions::compile_now`].
    ///
    /// # Errors
    /// The first pattern that does not compile.
    pub fn compile_now(&self) -> Result<(), String> {
        self.fields.iter().try_for_each(|(_, p)| p.compile_now())
    }

    /// Names the manifest in the patterns' messages; see [`Conditions::owned_by`].
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.fields = self
            .fields
            .into_iter()
            .map(|(f, p)| (f, p.owned_by(owner)))
            .collect();
        self
    }

    /// The values found in `message`: field → JSON string. Fields that do not match are absent.
    pub fn extract(&self, message: &str) -> Map<String, Value> {
        let mut out = Map::new();
        for (field, re) in &self.fields {
            let Some(re) = re.regex() else { continue };
            let group = usize::from(re.captures_len() > 1);
            let found = re
                .captures_iter(message)
                .filter_map(|caps| caps.get(group))
                .find(|m| !m.is_empty());
            if let Some(m) = found {
                out.insert(field.clone(), Value::String(m.as_str().to_owned()));
            }
        }
        out
    }
}

/// Intents are compared case-insensitively (Unicode lower case), so an agent saying
/// `Order-Status` fires an action listening for `order-status`.
fn same_intent(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Checks a pattern's syntax without compiling it: parsing costs microseconds where a
/// case-insensitive Unicode compile costs up to 0.15 ms.
///
/// # Errors
/// A one-line sentence quoting the pattern.
pub fn check_syntax(pattern: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            let detail = e.to_string();
            let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{pattern:?} is not a valid regular expression: {detail}")
        })
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        let detail = e.to_string();
        let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("{pattern:?} is not a valid regular expression: {detail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A list of names or patterns in a table of cases.
    type Strs = &'static [&'static str];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().expect("an object").clone()
    }

    fn conditions(intents: &[&str], patterns: &[&str], requires: &[&str], p: i32) -> Conditions {
        Conditions::compile(&strings(intents), &strings(patterns), &strings(requires), p)
            .expect("valid conditions")
    }

    #[test]
    fn an_action_fires_on_an_intent_or_a_pattern_when_its_variables_are_present() {
        struct Case {
            name: &'static str,
            intents: &'static [&'static str],
            patterns: &'static [&'static str],
            requires: &'static [&'static str],
            message: &'static str,
            agent_intents: &'static [&'static str],
            variables: Value,
            fires: bool,
        }
        let cases = [
            Case {
                name: "intent alone",
                intents: &["order-status"],
                patterns: &[],
                requires: &[],
                message: "hello",
                agent_intents: &["order-status"],
                variables: json!({}),
                fires: true,
            },
            Case {
                name: "intent compared case-insensitively",
                intents: &["Order-Status"],
                patterns: &[],
                requires: &[],
                message: "hello",
                agent_intents: &["greeting", "ORDER-STATUS"],
                variables: json!({}),
                fires: true,
            },
            Case {
                name: "other intent",
                intents: &["order-status"],
                patterns: &[],
                requires: &[],
                message: "hello",
                agent_intents: &["refund"],
                variables: json!({}),
                fires: false,
            },
            Case {
                name: "pattern alone",
                intents: &[],
                patterns: &[r"\border\b"],
                requires: &[],
                message: "where is my order?",
                agent_intents: &[],
                variables: json!({}),
                fires: true,
            },
            Case {
                name: "pattern is case-sensitive unless it says so",
                intents: &[],
                patterns: &[r"\border\b"],
                requires: &[],
                message: "ORDER 12",
                agent_intents: &[],
                variables: json!({}),
                fires: false,
            },
            Case {
                name: "second pattern matches",
                intents: &[],
                patterns: &["refund", r"(?i)\border\b"],
                requires: &[],
                message: "ORDER 12",
                agent_intents: &[],
                variables: json!({}),
                fires: true,
            },
            Case {
                name: "pattern or intent: the pattern suffices",
                intents: &["order-status"],
                patterns: &["order"],
                requires: &[],
                message: "my order",
                agent_intents: &[],
                variables: json!({}),
                fires: true,
            },
            Case {
                name: "neither intents nor patterns never fires",
                intents: &[],
                patterns: &[],
                requires: &[],
                message: "anything",
                agent_intents: &["anything"],
                variables: json!({}),
                fires: false,
            },
            Case {
                name: "required variable present",
                intents: &["order-status"],
                patterns: &[],
                requires: &["customer_id"],
                message: "",
                agent_intents: &["order-status"],
                variables: json!({"customer_id": "c-1"}),
                fires: true,
            },
            Case {
                name: "required variable empty string or false still counts as present",
                intents: &["order-status"],
                patterns: &[],
                requires: &["a", "b"],
                message: "",
                agent_intents: &["order-status"],
                variables: json!({"a": "", "b": false}),
                fires: true,
            },
            Case {
                name: "required variable missing",
                intents: &["order-status"],
                patterns: &[],
                requires: &["customer_id", "region"],
                message: "",
                agent_intents: &["order-status"],
                variables: json!({"customer_id": "c-1"}),
                fires: false,
            },
            Case {
                name: "required variable null",
                intents: &["order-status"],
                patterns: &[],
                requires: &["customer_id"],
                message: "",
                agent_intents: &["order-status"],
                variables: json!({"customer_id": null}),
                fires: false,
            },
            Case {
                name: "requires alone is not a trigger",
                intents: &[],
                patterns: &[],
                requires: &["customer_id"],
                message: "order",
                agent_intents: &[],
                variables: json!({"customer_id": "c-1"}),
                fires: false,
            },
        ];
        for case in cases {
            let c = conditions(case.intents, case.patterns, case.requires, 0);
            let got = matches(
                &c,
                case.message,
                &strings(case.agent_intents),
                &vars(case.variables),
            );
            assert_eq!(got, case.fires, "{}", case.name);
        }
    }

    #[test]
    fn eligible_actions_come_by_priority_then_name_each_once() {
        let high = conditions(&[], &["order"], &[], 10);
        let zero = conditions(&[], &["order"], &[], 0);
        let low = conditions(&[], &["order"], &[], -5);
        let silent = conditions(&[], &["refund"], &[], 100);
        type Loaded<'a> = Vec<(&'a str, &'a Conditions)>;
        let cases: &[(&str, Loaded, Strs)] = &[
            ("nothing loaded", vec![], &[]),
            (
                "higher priority first",
                vec![("a-low", &low), ("z-high", &high), ("m-zero", &zero)],
                &["z-high", "m-zero", "a-low"],
            ),
            (
                "ties broken by name, whatever the load order",
                vec![("c", &zero), ("a", &zero), ("b", &zero)],
                &["a", "b", "c"],
            ),
            (
                "actions that do not fire are left out",
                vec![("refunds", &silent), ("orders", &zero)],
                &["orders"],
            ),
            (
                "a name given twice appears once, at its highest priority",
                vec![("dup", &low), ("other", &zero), ("dup", &high)],
                &["dup", "other"],
            ),
        ];
        for (name, actions, want) in cases {
            let got = eligible(actions.iter().copied(), "my order", &[], &Map::new());
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn bad_conditions_are_rejected_naming_the_field() {
        let cases: &[(Strs, Strs, Strs, Strs)] = &[
            (
                &[],
                &["ok", "(unclosed"],
                &[],
                &[
                    "trigger.patterns[1]",
                    "\"(unclosed\"",
                    "not a valid regular expression",
                ],
            ),
            (&["a", " "], &[], &[], &["trigger.intents[1] is empty"]),
            (&[], &[], &[""], &["trigger.requires[0] is empty"]),
        ];
        for (intents, patterns, requires, wants) in cases {
            let err =
                Conditions::compile(&strings(intents), &strings(patterns), &strings(requires), 0)
                    .expect_err("invalid");
            assert!(!err.contains('\n'), "one line: {err}");
            for want in *wants {
                assert!(err.contains(want), "{err:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn a_pattern_too_large_to_compile_is_reported_by_compile_now_and_never_matches() {
        // Valid syntax, so it loads; only compiling finds it exceeds the regex size limit.
        let huge = r"(?:\w{100}){100}";
        let c = conditions(&[], &["order", huge], &[], 0);
        let err = c.compile_now().expect_err("too large");
        assert!(err.starts_with("trigger.patterns[1]: "), "{err}");
        assert!(err.contains("size limit"), "{err}");
        assert!(!c.patterns[1].is_match(&"a".repeat(20_000)));
        // The other pattern is unaffected, and compiled.
        assert!(c.patterns[0].is_match("my order"));
        let x = Extractor::compile(&[("id".to_string(), huge.to_string())])
            .unwrap()
            .owned_by("actions/x/action.toml");
        let err = x.compile_now().unwrap_err();
        assert!(
            err.starts_with("actions/x/action.toml: inputs.id.extract: "),
            "{err}"
        );
        assert!(x.extract("abc").is_empty());
    }

    #[test]
    fn extraction_takes_the_first_group_or_the_whole_match() {
        let fields = [
            ("order_id", r"(?i)order\s*#?(\d{6})"),
            ("email", r"[\w.+-]+@[\w-]+\.[\w.]+"),
            ("zip", r"\b(\d{5})\b"),
            ("named", r"ref (?<code>[A-Z]{3})"),
            ("optional_group", r"item(?: (\d+))?"),
        ];
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(f, p)| ((*f).to_owned(), (*p).to_owned()))
            .collect();
        let x = Extractor::compile(&fields).expect("valid");
        let cases: &[(&str, Value)] = &[
            ("nothing useful here", json!({})),
            (
                "Order #123456 for me@example.com",
                json!({"order_id": "123456", "email": "me@example.com"}),
            ),
            ("order 12345", json!({"zip": "12345"})),
            (
                "zip 99999 then 11111, ref ABC",
                json!({"zip": "99999", "named": "ABC"}),
            ),
            ("item, then item 42", json!({"optional_group": "42"})),
            ("just an item", json!({})),
        ];
        for (message, want) in cases {
            assert_eq!(Value::Object(x.extract(message)), *want, "{message}");
        }
    }

    #[test]
    fn bad_extractors_are_rejected_naming_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("ok", "a"), ("order_id", "(\\d+")],
                "inputs.order_id.extract: \"(\\\\d+\" is not a valid regular expression",
            ),
            (
                &[("order_id", "a"), ("order_id", "b")],
                "inputs.order_id.extract is given twice",
            ),
        ];
        for (fields, want) in cases {
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(f, p)| ((*f).to_owned(), (*p).to_owned()))
                .collect();
            let err = Extractor::compile(&fields).expect_err("invalid");
            assert!(
                err.starts_with(want),
                "{err:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn the_default_extractor_finds_nothing() {
        assert!(Extractor::default().extract("order 123456").is_empty());
    }
}
