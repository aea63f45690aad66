//! Authenticity checks for Sentry Integration Platform deliveries: the `Sentry-Hook-Signature`
//! HMAC and the `Sentry-Hook-Timestamp` clock-skew window.
//!
//! The signature is lowercase hex HMAC-SHA256 of the raw request body keyed with the integration's
//! client secret. It is always checked over the exact bytes received, never over re-serialised
//! JSON. The timestamp header is not covered by the signature, so it only narrows the window in
//! which a captured delivery can be replayed; deduplication by body hash is the real replay
//! defence.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of an HMAC-SHA256 tag (64 hex characters).
const TAG_LEN: usize = 32;

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`: the value Sentry sends in
/// `Sentry-Hook-Signature`. Used by `sluice sign` and by tests.
pub fn sign(body: &[u8], secret: &[u8]) -> String {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded), so this never
    // fails; the error type exists only because `KeyInit` is shared with fixed-key algorithms.
    let mut mac =
        HmacSha256::new_from_slice(secret).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `true` if `signature_hex` (the `Sentry-Hook-Signature` header value; surrounding whitespace is
/// ignored) is the lowercase hex HMAC-SHA256 of the exact `body` bytes under any of `secrets`
/// (several secrets allow rotation).
///
/// Only lowercase hex is accepted, as Sentry sends it (Python's `hexdigest()`) and as Sentry's
/// own verification example compares it (as a string): one encoding per tag, so what passes
/// here passes any receiver written after Sentry's docs.
///
/// Each comparison is constant time (`Mac::verify_slice`), and every secret is tried even after a
/// match, so timing reveals neither the tag nor which secret matched. A signature that is not
/// 64 lowercase hex characters is `false`, never a panic. Empty secrets never match: a secret
/// that expanded to an empty string must not turn into a key everybody knows.
pub fn verify_signature<S: AsRef<[u8]>>(body: &[u8], signature_hex: &str, secrets: &[S]) -> bool {
    let signature_hex = signature_hex.trim();
    let mut tag = [0u8; TAG_LEN];
    let lowercase_hex = signature_hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if signature_hex.len() != TAG_LEN * 2
        || !lowercase_hex
        || hex::decode_to_slice(signature_hex, &mut tag).is_err()
    {
        return false;
    }
    let mut matched = false;
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.is_empty() {
            continue;
        }
        let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
            continue;
        };
        mac.update(body);
        matched |= mac.verify_slice(&tag).is_ok();
    }
    matched
}

/// Why a `Sentry-Hook-Timestamp` header was rejected (answered with `401`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The header is present but is not Unix seconds (`1566248777` or `1566248777.677`).
    #[error("Sentry-Hook-Timestamp is not Unix seconds")]
    Unparsable,
    /// The header is further from the receiver's clock than the allowed skew.
    #[error(
        "Sentry-Hook-Timestamp is {skew_secs} s from the receiver's clock, more than the allowed clock skew"
    )]
    Skewed {
        /// `now - timestamp` in whole seconds: positive when the header lies in the past,
        /// negative when it lies in the future.
        skew_secs: i64,
    },
}

/// Checks the optional `Sentry-Hook-Timestamp` header against `now_unix` (Unix seconds).
///
/// - `None` (no header) is accepted: Sentry does not send it on every path, and the signature is
///   the authentication.
/// - The value is Unix seconds, optionally with a fraction (`1566248777.677`); surrounding
///   whitespace is ignored, the fraction is truncated. Anything else (empty, negative, exponent
///   notation, more than 18 integer digits) is [`TimestampError::Unparsable`].
/// - `|now_unix - timestamp| > max_skew_secs` is [`TimestampError::Skewed`]; exactly
///   `max_skew_secs` away is still accepted.
pub fn check_timestamp(
    header: Option<&str>,
    now_unix: i64,
    max_skew_secs: u64,
) -> Result<(), TimestampError> {
    let Some(raw) = header else {
        return Ok(());
    };
    let ts = parse_unix_seconds(raw).ok_or(TimestampError::Unparsable)?;
    let skew_secs = now_unix.saturating_sub(ts);
    if skew_secs.unsigned_abs() > max_skew_secs {
        Err(TimestampError::Skewed { skew_secs })
    } else {
        Ok(())
    }
}

/// `digits[.digits]` → whole seconds; `None` for anything else.
fn parse_unix_seconds(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let (int, frac) = match raw.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (raw, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // 18 digits always fit in an i64, so the parse below cannot overflow.
    if !all_digits(int) || int.len() > 18 || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    int.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "test-client-secret";
    /// The derived vector in tests/fixtures/sentry/README.md (compact `comment.created.json`).
    const BODY: &str = r#"{"action":"created","data":{"comment":"adding a comment","project_slug":"sentry","comment_id":1234,"issue_id":100,"timestamp":"2022-03-02T21:51:44.118160Z"},"installation":{"uuid":"eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},"actor":{"type":"user","id":1,"name":"colleen"}}"#;
    const SIGNATURE: &str = "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38";

    #[test]
    fn derived_vector_signs_and_verifies() {
        assert_eq!(sign(BODY.as_bytes(), SECRET.as_bytes()), SIGNATURE);
        assert!(verify_signature(BODY.as_bytes(), SIGNATURE, &[SECRET]));
    }

    #[test]
    fn header_is_trimmed_and_lowercase_only() {
        // The same tag in uppercase hex (or mixed case) is not what Sentry sends: refused.
        let upper = SIGNATURE.to_ascii_uppercase();
        assert!(!verify_signature(BODY.as_bytes(), &upper, &[SECRET]));
        let mixed = format!("{}{}", &upper[..32], &SIGNATURE[32..]);
        assert!(!verify_signature(BODY.as_bytes(), &mixed, &[SECRET]));
        assert!(verify_signature(
            BODY.as_bytes(),
            &format!("  {SIGNATURE}\t\n"),
            &[SECRET]
        ));
    }

    #[test]
    fn one_bit_change_fails() {
        let mut body = BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert!(!verify_signature(&body, SIGNATURE, &[SECRET]));
        // A flipped bit in the signature fails as well.
        let mut tag = hex::decode(SIGNATURE).unwrap();
        tag[31] ^= 0x80;
        assert!(!verify_signature(
            BODY.as_bytes(),
            &hex::encode(tag),
            &[SECRET]
        ));
        // And so does a different secret.
        assert!(!verify_signature(
            BODY.as_bytes(),
            SIGNATURE,
            &["test-client-secreT"]
        ));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let secrets = ["new-secret".to_string(), SECRET.to_string()];
        assert!(verify_signature(BODY.as_bytes(), SIGNATURE, &secrets));
        let bytes: [&[u8]; 2] = [SECRET.as_bytes(), b"new-secret"];
        assert!(verify_signature(BODY.as_bytes(), SIGNATURE, &bytes));
        assert!(!verify_signature(BODY.as_bytes(), SIGNATURE, &["a", "b"]));
        assert!(!verify_signature::<&str>(BODY.as_bytes(), SIGNATURE, &[]));
    }

    #[test]
    fn empty_secret_never_matches() {
        let sig = sign(BODY.as_bytes(), b"");
        assert!(!verify_signature(BODY.as_bytes(), &sig, &[""]));
    }

    #[test]
    fn garbage_headers_are_false() {
        let garbage = [
            "",
            " ",
            "sha256=96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38",
            &SIGNATURE[..63],
            &SIGNATURE[..62],
            "zz",
            "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c3g",
            "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c3800",
            "ñ6cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c3",
            "96cd c9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38",
        ];
        for header in garbage {
            assert!(
                !verify_signature(BODY.as_bytes(), header, &[SECRET]),
                "{header:?}"
            );
        }
    }

    #[test]
    fn timestamp_absent_is_accepted() {
        assert_eq!(check_timestamp(None, 1_000, 0), Ok(()));
    }

    #[test]
    fn timestamp_within_skew_is_accepted() {
        let now = 1_566_248_777;
        assert_eq!(check_timestamp(Some("1566248777"), now, 0), Ok(()));
        assert_eq!(check_timestamp(Some("1566248777.677"), now, 0), Ok(()));
        assert_eq!(check_timestamp(Some(" 1566248477 "), now, 300), Ok(()));
        assert_eq!(check_timestamp(Some("1566249077.999"), now, 300), Ok(()));
    }

    #[test]
    fn timestamp_outside_skew_is_rejected_with_its_sign() {
        let now = 1_566_248_777;
        assert_eq!(
            check_timestamp(Some("1566248476"), now, 300),
            Err(TimestampError::Skewed { skew_secs: 301 })
        );
        assert_eq!(
            check_timestamp(Some("1566249078.5"), now, 300),
            Err(TimestampError::Skewed { skew_secs: -301 })
        );
        assert_eq!(
            check_timestamp(Some("0"), i64::MAX, u64::MAX - 1),
            Ok(()),
            "i64::MAX seconds is within u64::MAX - 1"
        );
        assert_eq!(
            check_timestamp(Some("999999999999999999"), i64::MIN, 0),
            Err(TimestampError::Skewed {
                skew_secs: i64::MIN
            })
        );
    }

    #[test]
    fn unparsable_timestamps_are_rejected() {
        for raw in [
            "",
            " ",
            "abc",
            "1.2.3",
            "-5",
            "+5",
            "1e9",
            "NaN",
            "inf",
            ".5",
            "5.",
            "0x10",
            "1566248777.677Z",
            "1234567890123456789",
        ] {
            assert_eq!(
                check_timestamp(Some(raw), 1_566_248_777, u64::MAX),
                Err(TimestampError::Unparsable),
                "{raw:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn sign_verify_roundtrip(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in proptest::collection::vec(any::<u8>(), 1..100),
        ) {
            let sig = sign(&body, &secret);
            prop_assert_eq!(sig.len(), 64);
            prop_assert!(sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(verify_signature(&body, &sig, &[&secret]));
        }

        #[test]
        fn any_modified_body_fails(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in proptest::collection::vec(any::<u8>(), 1..100),
            edit in any::<(usize, u8, u8)>(),
        ) {
            let sig = sign(&body, &secret);
            let (pos, byte, kind) = edit;
            let mut modified = body.clone();
            match kind % 3 {
                0 if !modified.is_empty() => {
                    let i = pos % modified.len();
                    modified[i] ^= byte.max(1);
                }
                1 if !modified.is_empty() => {
                    modified.remove(pos % modified.len());
                }
                _ => modified.insert(pos % (modified.len() + 1), byte),
            }
            prop_assert_ne!(&modified, &body);
            prop_assert!(!verify_signature(&modified, &sig, &[&secret]));
        }

        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,80}", body in ".{0,40}") {
            let _ = verify_signature(body.as_bytes(), &header, &["s"]);
            let _ = check_timestamp(Some(&header), 0, 300);
        }
    }
}
