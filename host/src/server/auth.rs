//! API keys and their scopes.
//!
//! Keys come from `[[server.api_keys]]` in callout.toml: each names an environment variable that
//! holds the key, or gives only the key's SHA-256, so callout.toml never contains a key. A
//! request presents its key as `Authorization: Bearer <key>`. The key is hashed and compared
//! with every configured digest in constant time (no early exit on the first match or the first
//! differing byte), so the response time does not tell an attacker how close a guess was.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiKeySetting, KeyScope};

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct Keys {
    keys: Vec<(String, KeyScope, [u8; 32])>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(n, s, _)| (n, s)))
            .finish()
    }
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name from callout.toml.
    pub key_name: String,
    /// What it may do.
    pub scope: KeyScope,
}

impl Keys {
    /// Reads the keys of `[[server.api_keys]]`; `env` is how environment variables are read
    /// (the process environment in production, a map in tests).
    ///
    /// # Errors
    /// An entry with neither or both of `env` and `sha256`, an unset or short key variable, a
    /// malformed digest, or a duplicate name, each naming the entry and the fix.
    pub fn from_settings(
        settings: &[ApiKeySetting],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            let at = format!("server.api_keys[{i}] (name = {:?})", s.name);
            if keys.iter().any(|(n, _, _)| *n == s.name) {
                return Err(format!(
                    "{at}: the name is used twice; give each key its own name"
                ));
            }
            let digest = match (&s.env, &s.sha256) {
                (Some(var), None) => {
                    let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                        format!("{at}: the environment variable {var} is not set; export it with the key")
                    })?;
                    if key.len() < 16 {
                        return Err(format!(
                            "{at}: the key in {var} has {} characters; use at least 16 (e.g. `openssl rand -hex 24`)",
                            key.len()
                        ));
                    }
                    digest(&key)
                }
                (None, Some(hex_digest)) => hex::decode(hex_digest.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        format!(
                            "{at}: sha256 must be 64 hex digits (printf %s \"$KEY\" | sha256sum)"
                        )
                    })?,
                _ => {
                    return Err(format!(
                        "{at}: give exactly one of env = \"VARIABLE\" or sha256 = \"<hex>\""
                    ));
                }
            };
            keys.push((s.name.clone(), s.scope, digest));
        }
        Ok(Self { keys })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller presenting `key`, if any configured key matches. Every configured digest is
    /// compared, whatever matched before.
    pub fn check(&self, key: &str) -> Option<Caller> {
        let presented = digest(key);
        let mut found: Option<Caller> = None;
        for (name, scope, d) in &self.keys {
            let eq: bool = presented.ct_eq(d).into();
            if eq && found.is_none() {
                found = Some(Caller {
                    key_name: name.clone(),
                    scope: *scope,
                });
            }
        }
        found
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key of an `Authorization: Bearer <key>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(name: &str, scope: KeyScope, env: Option<&str>, sha: Option<&str>) -> ApiKeySetting {
        ApiKeySetting {
            name: name.into(),
            scope,
            env: env.map(str::to_string),
            sha256: sha.map(str::to_string),
        }
    }

    #[test]
    fn keys_from_env_and_digest_match_only_themselves() {
        let admin_key = "admin-key-0123456789";
        let admin_digest = hex::encode(Sha256::digest(admin_key));
        let keys = Keys::from_settings(
            &[
                setting("bot", KeyScope::Agent, Some("BOT_KEY"), None),
                setting("ops", KeyScope::Admin, None, Some(&admin_digest)),
            ],
            |v| (v == "BOT_KEY").then(|| "agent-key-0123456789".to_string()),
        )
        .unwrap();
        assert_eq!(
            keys.check("agent-key-0123456789"),
            Some(Caller {
                key_name: "bot".into(),
                scope: KeyScope::Agent
            })
        );
        assert_eq!(keys.check(admin_key).unwrap().scope, KeyScope::Admin);
        assert_eq!(keys.check("agent-key-012345678"), None);
        assert_eq!(keys.check(""), None);
    }

    #[test]
    fn bad_entries_are_refused_with_the_fix() {
        let unset = Keys::from_settings(
            &[setting("bot", KeyScope::Agent, Some("NOPE"), None)],
            |_| None,
        )
        .unwrap_err();
        assert!(unset.contains("NOPE is not set"), "{unset}");
        let short =
            Keys::from_settings(&[setting("bot", KeyScope::Agent, Some("K"), None)], |_| {
                Some("short".into())
            })
            .unwrap_err();
        assert!(short.contains("at least 16"), "{short}");
        let both = Keys::from_settings(
            &[setting("bot", KeyScope::Agent, Some("K"), Some("00"))],
            |_| Some("x".repeat(20)),
        )
        .unwrap_err();
        assert!(both.contains("exactly one"), "{both}");
        let bad_hex = Keys::from_settings(
            &[setting("bot", KeyScope::Agent, None, Some("abc"))],
            |_| None,
        )
        .unwrap_err();
        assert!(bad_hex.contains("64 hex digits"), "{bad_hex}");
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
