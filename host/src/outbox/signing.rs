//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, spec version 1.0.0), the
//! symmetric scheme: so a receiver can check that a delivery came from this host, unchanged and
//! recently.
//!
//! A delivery carries three headers: `webhook-id` (the message id: here the delivery's
//! idempotency key, the same on every retry), `webhook-timestamp` (the attempt's time, in
//! seconds since the Unix epoch) and `webhook-signature`: `v1,` and the base64 of
//! HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`). The header may hold several space-separated
//! signatures (one per key while a secret is rotated); a receiver accepts the message when any
//! `v1` one matches.
//!
//! Secrets are shown as `whsec_` and the base64 of 24 to 64 random bytes
//! ([`SigningSecret::generate`] makes 32).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header with the message id.
pub const HEADER_ID: &str = "webhook-id";
/// The header with the attempt's timestamp (seconds since the Unix epoch).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header with the signature(s).
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret as shown to people.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a timestamp may be from the receiver's clock, either way, by default: 5 minutes (as
/// in the reference libraries).
pub const DEFAULT_TOLERANCE_S: u64 = 5 * 60;

/// The shortest key the spec allows, in bytes.
pub const MIN_KEY_BYTES: usize = 24;
/// The longest key the spec allows, in bytes (512 bits).
pub const MAX_KEY_BYTES: usize = 64;

/// The version tag of symmetric signatures.
const VERSION: &str = "v1";

/// Why signing or verifying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret is not `whsec_` and base64 of 24 to 64 bytes.
    #[error(
        "invalid webhook secret: {0}; use the `whsec_...` value as given, or make a new one \
         (24 to 64 random bytes, base64, prefixed with whsec_)"
    )]
    InvalidSecret(String),
    /// The message id contains a `.` (which would make the signed content ambiguous) or is
    /// empty.
    #[error(
        "invalid webhook id {0:?}: it must be non-empty and contain no '.'; use the delivery's key"
    )]
    InvalidId(String),
    /// The `webhook-timestamp` header is not a whole number of seconds.
    #[error("invalid webhook-timestamp {0:?}: expected seconds since the Unix epoch")]
    InvalidTimestamp(String),
    /// The timestamp is further from now than the tolerance: a replay, or a wrong clock.
    #[error(
        "webhook-timestamp {timestamp} is {off_by_s} s from now (tolerance {tolerance_s} s); \
         check both clocks, or reject the message as a replay"
    )]
    TimestampOutOfTolerance {
        /// The header's value.
        timestamp: u64,
        /// How far from now.
        off_by_s: u64,
        /// The tolerance used.
        tolerance_s: u64,
    },
    /// No `v1` signature in the header matches.
    #[error(
        "no webhook signature matches; check that the body is verified byte for byte as \
         received and that the secret is the endpoint's current one"
    )]
    NoMatch,
    /// The OS random source failed while making a secret.
    #[error("cannot make a webhook secret: {0}; check the OS random source")]
    Random(String),
}

/// A Standard Webhooks signing key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret({} bytes, redacted)", self.key.len())
    }
}

impl SigningSecret {
    /// Reads a secret as shown to people: `whsec_` and base64 (standard alphabet, padded). A
    /// value without the prefix is accepted too, as the reference libraries do.
    ///
    /// # Errors
    /// [`SigningError::InvalidSecret`] when it is not base64 or not 24 to 64 bytes.
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let b64 = s.trim().strip_prefix(SECRET_PREFIX).unwrap_or(s.trim());
        let key = STANDARD
            .decode(b64)
            .map_err(|e| SigningError::InvalidSecret(format!("not base64 ({e})")))?;
        Self::from_bytes(key)
    }

    /// A secret from raw key bytes.
    ///
    /// # Errors
    /// [`SigningError::InvalidSecret`] when not 24 to 64 bytes.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SigningError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SigningError::InvalidSecret(format!(
                "the key is {} bytes (the spec asks for {MIN_KEY_BYTES} to {MAX_KEY_BYTES})",
                key.len()
            )));
        }
        Ok(Self { key })
    }

    /// A new random secret of 32 bytes.
    ///
    /// # Errors
    /// [`SigningError::Random`].
    pub fn generate() -> Result<Self, SigningError> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(Self { key })
    }

    /// The secret as shown to people: `whsec_` and base64. It is the secret itself: show it
    /// only to whoever configures the receiver.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `webhook-signature` value for message `id`, sent at `timestamp_s` (seconds since the
    /// Unix epoch), with this `body` (the exact bytes sent): `v1,<base64 HMAC-SHA256>`.
    ///
    /// # Errors
    /// [`SigningError::InvalidId`] when `id` is empty or contains a `.`.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> Result<String, SigningError> {
        check_id(id)?;
        let tag = self.mac(id, timestamp_s, body).finalize().into_bytes();
        Ok(format!("{VERSION},{}", STANDARD.encode(tag)))
    }

    /// Checks a received message, as a receiver does: `timestamp` must be within `tolerance_s`
    /// of `now_s` (either way), and one of the space-separated signatures in `signatures` must
    /// be a matching `v1` one (others, like asymmetric `v1a`, are skipped). Comparison is
    /// constant-time.
    ///
    /// # Errors
    /// [`SigningError::InvalidId`], [`SigningError::InvalidTimestamp`],
    /// [`SigningError::TimestampOutOfTolerance`] or [`SigningError::NoMatch`].
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now_s: u64,
        tolerance_s: u64,
    ) -> Result<(), SigningError> {
        check_id(id)?;
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SigningError::InvalidTimestamp(timestamp.chars().take(32).collect()))?;
        let off_by_s = ts.abs_diff(now_s);
        if off_by_s > tolerance_s {
            return Err(SigningError::TimestampOutOfTolerance {
                timestamp: ts,
                off_by_s,
                tolerance_s,
            });
        }
        let mac = self.mac(id, ts, body);
        let matched = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == VERSION)
            .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
            .any(|tag| mac.clone().verify_slice(&tag).is_ok());
        if matched {
            Ok(())
        } else {
            Err(SigningError::NoMatch)
        }
    }

    fn mac(&self, id: &str, timestamp_s: u64, body: &[u8]) -> Hmac<Sha256> {
        // Any key length is valid for HMAC; the length was checked when the secret was made.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(e) => unreachable!("HMAC takes keys of any length: {e}"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

fn check_id(id: &str) -> Result<(), SigningError> {
    if id.is_empty() || id.contains('.') {
        return Err(SigningError::InvalidId(id.chars().take(64).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of the reference JavaScript library's "sign function works" test
    // (standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts).
    const JS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const JS_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const JS_TS: u64 = 1_614_265_330;
    const JS_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const JS_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_reference_libraries_vectors() {
        let s = SigningSecret::parse(JS_SECRET).unwrap();
        assert_eq!(s.sign(JS_ID, JS_TS, JS_BODY).unwrap(), JS_SIG);
        // The reference Rust library's `test_sign` (libraries/rust/src/lib.rs).
        let s = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            s.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            )
            .unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        // Without the prefix, as the reference libraries accept.
        let bare = SigningSecret::parse(JS_SECRET.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(bare.sign(JS_ID, JS_TS, JS_BODY).unwrap(), JS_SIG);
    }

    #[test]
    fn verifies_within_the_tolerance_only() {
        let s = SigningSecret::parse(JS_SECRET).unwrap();
        let ts = JS_TS.to_string();
        let ok = |now: u64| s.verify(JS_ID, &ts, JS_SIG, JS_BODY, now, DEFAULT_TOLERANCE_S);
        ok(JS_TS).unwrap();
        ok(JS_TS + 300).unwrap();
        ok(JS_TS - 300).unwrap();
        for now in [JS_TS + 301, JS_TS - 301] {
            let err = ok(now).unwrap_err();
            assert_eq!(
                err,
                SigningError::TimestampOutOfTolerance {
                    timestamp: JS_TS,
                    off_by_s: 301,
                    tolerance_s: 300
                }
            );
            assert!(err.to_string().contains("replay"), "{err}");
        }
        assert!(matches!(
            s.verify(JS_ID, "hello", JS_SIG, JS_BODY, JS_TS, 300),
            Err(SigningError::InvalidTimestamp(_))
        ));
    }

    #[test]
    fn accepts_any_matching_v1_in_a_list_and_rejects_tampering() {
        let s = SigningSecret::parse(JS_SECRET).unwrap();
        let ts = JS_TS.to_string();
        let v = |id: &str, sigs: &str, body: &[u8]| s.verify(id, &ts, sigs, body, JS_TS, 300);
        let other = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let sig_b64 = JS_SIG.strip_prefix("v1,").unwrap();
        // The spec's rotation case: several signatures, the valid one anywhere.
        v(
            JS_ID,
            &format!("{other} v2,{sig_b64} {JS_SIG} {other}"),
            JS_BODY,
        )
        .unwrap();
        v(JS_ID, &format!("v1a,abc {JS_SIG}"), JS_BODY).unwrap();
        // The right signature under another version tag is not a v1 signature.
        for bad in [
            other.to_owned(),
            format!("v2,{sig_b64}"),
            format!("v1a,{sig_b64}"),
            sig_b64.to_owned(),
            JS_SIG[..8].to_owned(),
            "v1,".to_owned(),
            String::new(),
            "v1,not base64!".to_owned(),
        ] {
            assert_eq!(
                v(JS_ID, &bad, JS_BODY),
                Err(SigningError::NoMatch),
                "{bad:?}"
            );
        }
        // Any change to body, id or timestamp breaks it.
        assert_eq!(
            v(JS_ID, JS_SIG, br#"{"test": 2432232315}"#),
            Err(SigningError::NoMatch)
        );
        assert_eq!(v("msg_other", JS_SIG, JS_BODY), Err(SigningError::NoMatch));
        assert_eq!(
            s.verify(JS_ID, &(JS_TS + 1).to_string(), JS_SIG, JS_BODY, JS_TS, 300),
            Err(SigningError::NoMatch)
        );
        // Another key.
        let k2 = SigningSecret::generate().unwrap();
        assert_eq!(
            k2.verify(JS_ID, &ts, JS_SIG, JS_BODY, JS_TS, 300),
            Err(SigningError::NoMatch)
        );
        let err = SigningError::NoMatch.to_string();
        assert!(err.contains("byte for byte"), "{err}");
    }

    #[test]
    fn ids_with_dots_are_refused() {
        let s = SigningSecret::generate().unwrap();
        for bad in ["", "a.b", "."] {
            assert!(
                matches!(s.sign(bad, 1, b"x"), Err(SigningError::InvalidId(_))),
                "{bad:?}"
            );
            assert!(matches!(
                s.verify(bad, "1", "v1,x", b"x", 1, 300),
                Err(SigningError::InvalidId(_))
            ));
        }
    }

    #[test]
    fn secrets_are_checked_generated_and_never_shown_by_debug() {
        for (bad, why) in [
            ("whsec_!!!", "not base64"),
            ("whsec_c2hvcnQ=", "5 bytes"),
            ("", "0 bytes"),
        ] {
            let err = SigningSecret::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("make a new one"), "{err}");
        }
        assert!(SigningSecret::from_bytes(vec![1; 24]).is_ok());
        assert!(SigningSecret::from_bytes(vec![1; 64]).is_ok());
        assert!(SigningSecret::from_bytes(vec![1; 23]).is_err());
        assert!(SigningSecret::from_bytes(vec![1; 65]).is_err());

        let a = SigningSecret::generate().unwrap();
        let b = SigningSecret::generate().unwrap();
        assert_ne!(a, b);
        let shown = a.reveal();
        assert!(shown.starts_with("whsec_"), "{shown}");
        assert_eq!(SigningSecret::parse(&shown).unwrap(), a);
        let debug = format!("{a:?}");
        assert!(!debug.contains(&shown[6..]), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");

        // Round trip with a fresh key, binary body.
        let body = [0u8, 255, 10, 46];
        let sig = a.sign("key123", 1_700_000_000, &body).unwrap();
        a.verify("key123", "1700000000", &sig, &body, 1_700_000_010, 300)
            .unwrap();
    }
}
