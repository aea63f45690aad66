//! Slack's request signing (v0): the `X-Slack-Signature` and `X-Slack-Request-Timestamp`
//! headers of every request Slack sends to `POST /slack/interactions`.
//!
//! The signature is `v0=` + lowercase hex HMAC-SHA256 keyed with the app's signing secret
//! over `v0:{timestamp}:{raw body}`. Unlike Sentry's, the timestamp is covered by the
//! signature, so refusing one more than [`MAX_SKEW_SECS`] from the clock bounds replays. It
//! is always checked over the exact bytes received, never over a re-encoded form.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix of Slack's signature scheme, in the header and the signed string.
const VERSION: &str = "v0";

/// Length in bytes of an HMAC-SHA256 tag (64 hex characters).
const TAG_LEN: usize = 32;

/// How far `X-Slack-Request-Timestamp` may be from the receiver's clock, either way: 5
/// minutes, as Slack's documentation recommends.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request is refused as not from Slack (answered with `401`, nothing done). The
/// message says which check failed, for logs; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is absent or empty: the one named.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The timestamp is further from the receiver's clock than [`MAX_SKEW_SECS`].
    #[error("X-Slack-Request-Timestamp is {skew_secs} s from the receiver's clock (at most 300)")]
    Stale {
        /// `now - timestamp` in whole seconds: positive in the past, negative in the future.
        skew_secs: i64,
    },
    /// Well formed, but no configured secret produces it (or none is configured).
    #[error("X-Slack-Signature matches no signing secret")]
    Mismatch,
    /// A header is not in Slack's format: what is wrong with it.
    #[error("{0}")]
    Malformed(&'static str),
}

impl SignatureError {
    /// A short token for logs and metric labels: `missing`, `stale`, `mismatch`, `malformed`.
    pub fn label(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "missing",
            SignatureError::Stale { .. } => "stale",
            SignatureError::Mismatch => "mismatch",
            SignatureError::Malformed(_) => "malformed",
        }
    }
}

/// The `X-Slack-Signature` Slack sends for `body` at `timestamp` (Unix seconds) under
/// `secret`: `v0=` + 64 lowercase hex characters. For tests and `sluice`'s click simulator.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{VERSION}={}",
        hex::encode(
            mac(secret.as_bytes(), &timestamp.to_string(), body)
                .finalize()
                .into_bytes()
        )
    )
}

/// Checks a request's `X-Slack-Request-Timestamp` (`timestamp`, Unix seconds) and
/// `X-Slack-Signature` (`signature`) over its raw `body` against every one of `secrets`
/// (several allow rotation), at `now_unix` (Unix seconds). An absent header is passed as `""`.
///
/// In order: an empty header is [`SignatureError::Missing`]; a timestamp that is not whole
/// Unix seconds or a signature that is not `v0=` + 64 lowercase hex is
/// [`SignatureError::Malformed`]; a timestamp more than [`MAX_SKEW_SECS`] away is
/// [`SignatureError::Stale`]; a signature no secret produces is [`SignatureError::Mismatch`].
/// Each comparison is constant time (`Mac::verify_slice`) and every secret is tried, so timing
/// reveals neither the tag nor which secret matched. Empty secrets never match: a secret that
/// expanded to an empty string must not become a key everybody knows.
pub fn verify(
    secrets: &[&str],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let (timestamp, signature) = (timestamp.trim(), signature.trim());
    if timestamp.is_empty() {
        return Err(SignatureError::Missing("X-Slack-Request-Timestamp"));
    }
    if signature.is_empty() {
        return Err(SignatureError::Missing("X-Slack-Signature"));
    }
    let ts = parse_timestamp(timestamp).ok_or(SignatureError::Malformed(
        "X-Slack-Request-Timestamp is not whole Unix seconds",
    ))?;
    let tag = parse_signature(signature).ok_or(SignatureError::Malformed(
        "X-Slack-Signature is not v0= and 64 lowercase hex characters",
    ))?;
    let skew_secs = now_unix.saturating_sub(ts);
    if skew_secs.unsigned_abs() > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale { skew_secs });
    }
    let mut matched = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        matched |= mac(secret.as_bytes(), timestamp, body)
            .verify_slice(&tag)
            .is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The HMAC over `v0:{timestamp}:{body}`, fed in pieces (the body is never copied).
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded), so this never
    // fails; the error type exists only because `KeyInit` is shared with fixed-key algorithms.
    let mut mac =
        HmacSha256::new_from_slice(secret).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(VERSION.as_bytes());
    mac.update(b":");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Whole Unix seconds (digits only, as Slack sends them; at most 18 so that it fits an i64).
fn parse_timestamp(raw: &str) -> Option<i64> {
    let digits = !raw.is_empty() && raw.len() <= 18 && raw.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| raw.parse().ok()).flatten()
}

/// The tag of `v0=` + 64 lowercase hex characters.
fn parse_signature(raw: &str) -> Option<[u8; TAG_LEN]> {
    let hex_part = raw.strip_prefix("v0=")?;
    let lowercase_hex = hex_part
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut tag = [0u8; TAG_LEN];
    (hex_part.len() == TAG_LEN * 2 && lowercase_hex)
        .then(|| hex::decode_to_slice(hex_part, &mut tag).ok())
        .flatten()
        .map(|()| tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked example of Slack's "Verifying requests from Slack" (a slash command's form
    /// body, signed at `DOC_TS` with `DOC_SECRET`).
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: i64 = 1_531_420_618;
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(secrets: &[&str], ts: &str, sig: &str, now: i64) -> Result<(), SignatureError> {
        verify(secrets, ts, DOC_BODY.as_bytes(), sig, now)
    }

    #[test]
    fn slacks_documented_example_signs_and_verifies() {
        assert_eq!(sign(DOC_SECRET, DOC_TS, DOC_BODY.as_bytes()), DOC_SIG);
        assert_eq!(check(&[DOC_SECRET], "1531420618", DOC_SIG, DOC_TS), Ok(()));
        // With whitespace around the headers, as some proxies leave it.
        assert_eq!(
            check(
                &[DOC_SECRET],
                " 1531420618 ",
                &format!(" {DOC_SIG}\n"),
                DOC_TS + 60
            ),
            Ok(())
        );
    }

    #[test]
    fn any_configured_secret_verifies() {
        let secrets = ["new-secret", DOC_SECRET];
        assert_eq!(check(&secrets, "1531420618", DOC_SIG, DOC_TS), Ok(()));
        assert_eq!(
            check(&["a", "b"], "1531420618", DOC_SIG, DOC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&[], "1531420618", DOC_SIG, DOC_TS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_empty_secret_never_matches() {
        let sig = sign("", DOC_TS, DOC_BODY.as_bytes());
        assert_eq!(
            check(&[""], "1531420618", &sig, DOC_TS),
            Err(SignatureError::Mismatch)
        );
    }

    /// The body, the timestamp and the signature are all covered: one change in any fails.
    #[test]
    fn a_changed_body_timestamp_or_signature_fails() {
        let mut body = DOC_BODY.as_bytes().to_vec();
        body[0] ^= 1;
        assert_eq!(
            verify(&[DOC_SECRET], "1531420618", &body, DOC_SIG, DOC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&[DOC_SECRET], "1531420619", DOC_SIG, DOC_TS),
            Err(SignatureError::Mismatch)
        );
        let flipped = format!("{}4", &DOC_SIG[..DOC_SIG.len() - 1]);
        assert_eq!(
            check(&[DOC_SECRET], "1531420618", &flipped, DOC_TS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_more_than_five_minutes_away_is_stale() {
        let ts = "1531420618";
        assert_eq!(check(&[DOC_SECRET], ts, DOC_SIG, DOC_TS + 300), Ok(()));
        assert_eq!(check(&[DOC_SECRET], ts, DOC_SIG, DOC_TS - 300), Ok(()));
        assert_eq!(
            check(&[DOC_SECRET], ts, DOC_SIG, DOC_TS + 301),
            Err(SignatureError::Stale { skew_secs: 301 })
        );
        assert_eq!(
            check(&[DOC_SECRET], ts, DOC_SIG, DOC_TS - 301),
            Err(SignatureError::Stale { skew_secs: -301 })
        );
        // Stale is refused before any HMAC is computed, even with a wrong signature.
        let wrong = format!("v0={}", "0".repeat(64));
        assert_eq!(
            check(&[DOC_SECRET], ts, &wrong, i64::MIN)
                .unwrap_err()
                .label(),
            "stale"
        );
    }

    #[test]
    fn absent_headers_are_missing() {
        assert_eq!(
            check(&[DOC_SECRET], "", DOC_SIG, DOC_TS),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            check(&[DOC_SECRET], "1531420618", " ", DOC_TS),
            Err(SignatureError::Missing("X-Slack-Signature"))
        );
        assert_eq!(
            check(&[DOC_SECRET], "", "", DOC_TS).unwrap_err().label(),
            "missing"
        );
    }

    #[test]
    fn headers_not_in_slacks_format_are_malformed() {
        for ts in [
            "abc",
            "-5",
            "+5",
            "1.5",
            "1e9",
            "1234567890123456789",
            "0x10",
        ] {
            let err = check(&[DOC_SECRET], ts, DOC_SIG, DOC_TS).unwrap_err();
            assert_eq!(err.label(), "malformed", "{ts:?}");
            assert!(err.to_string().contains("Timestamp"), "{err}");
        }
        let hex = &DOC_SIG[3..];
        for sig in [
            hex.to_string(),
            format!("v1={hex}"),
            format!("sha256={hex}"),
            DOC_SIG.to_ascii_uppercase(),
            format!("v0={}", hex.to_ascii_uppercase()),
            DOC_SIG[..DOC_SIG.len() - 1].to_string(),
            format!("{DOC_SIG}00"),
            format!("v0={}g", &hex[..63]),
            "v0=".to_string(),
        ] {
            let err = check(&[DOC_SECRET], "1531420618", &sig, DOC_TS).unwrap_err();
            assert_eq!(err.label(), "malformed", "{sig:?}");
            assert!(err.to_string().contains("Signature"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn sign_verify_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in "[ -~]{1,64}",
            ts in 0i64..4_000_000_000,
            skew in -300i64..=300,
        ) {
            let sig = sign(&secret, ts, &body);
            prop_assert!(sig.starts_with("v0=") && sig.len() == 67);
            prop_assert_eq!(verify(&[&secret], &ts.to_string(), &body, &sig, ts + skew), Ok(()));
            prop_assert_eq!(
                verify(&["other"], &ts.to_string(), &body, &sig, ts),
                Err(SignatureError::Mismatch)
            );
        }

        #[test]
        fn arbitrary_headers_never_panic(ts in ".{0,40}", sig in ".{0,80}", now in any::<i64>()) {
            let _ = verify(&["s"], &ts, b"body", &sig, now);
        }
    }
}
