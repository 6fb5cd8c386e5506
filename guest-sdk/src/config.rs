//! The action's non-secret settings: the `[config]` table of `action.toml`, overridden per
//! deployment by `[actions.<name>.config]` in `callout.toml`. Secrets are never here: put
//! `{{secret.NAME}}` in a request header instead.

use serde::de::DeserializeOwned;

use crate::bindings::callout::plugin::config as wit;
use crate::error::ActionError;

/// The value under `key`, or `None` when it is not set. A string is returned as it is; any
/// other value (number, boolean, table, array) as JSON text.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// The value under `key`.
///
/// # Errors
/// An internal error naming the key, telling the operator to set it, when it is not set.
pub fn require(key: &str) -> Result<String, ActionError> {
    get(key).ok_or_else(|| missing(key))
}

/// The value under `key` deserialized into `T`: a table into a struct, a number into a
/// number, a string into a `String` (or anything that deserializes from a JSON string). The
/// value is read as JSON text first, then as a plain string, so `T = String` accepts any value
/// and a string holding JSON (`"42"`) also fits a number.
///
/// # Errors
/// An internal error naming the key when the value does not fit `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ActionError> {
    get(key).map(|raw| parse(key, &raw)).transpose()
}

pub(crate) fn missing(key: &str) -> ActionError {
    ActionError::internal(format!(
        "the config key `{key}` is not set: set it in the [config] table of action.toml"
    ))
}

/// Parses a config value: JSON text for non-strings, the string itself otherwise.
pub(crate) fn parse<T: DeserializeOwned>(key: &str, raw: &str) -> Result<T, ActionError> {
    serde_json::from_str(raw)
        .or_else(|json_error| {
            T::deserialize(serde_json::Value::String(raw.to_owned())).map_err(|_| json_error)
        })
        .map_err(|e| {
            ActionError::internal(format!(
                "the config key `{key}` has an unexpected value: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Limits {
        max: u32,
    }

    #[test]
    fn a_missing_key_names_the_key_and_where_to_set_it() {
        let e = missing("base_url").to_string();
        assert!(e.contains("`base_url`"), "{e}");
        assert!(e.contains("[config]") && e.contains("action.toml"), "{e}");
    }

    #[test]
    fn config_values_parse_from_json_text_or_from_a_plain_string() {
        assert_eq!(parse::<u32>("n", "42").unwrap(), 42);
        assert!(parse::<bool>("b", "true").unwrap());
        assert_eq!(
            parse::<Limits>("l", r#"{"max":3}"#).unwrap(),
            Limits { max: 3 }
        );
        assert_eq!(
            parse::<Vec<String>>("v", r#"["a","b"]"#).unwrap(),
            ["a", "b"]
        );
        // Strings come as they are, not as JSON text.
        assert_eq!(
            parse::<String>("s", "https://api.test").unwrap(),
            "https://api.test"
        );
        assert_eq!(parse::<String>("s", "42").unwrap(), "42");
    }

    #[test]
    fn a_config_value_of_the_wrong_shape_is_an_internal_error_naming_the_key() {
        let e = parse::<Limits>("limits", "12").unwrap_err();
        assert!(
            matches!(&e, ActionError::Internal(m) if m.contains("`limits`")),
            "{e}"
        );
    }
}
