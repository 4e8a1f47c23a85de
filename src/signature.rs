//! Standard Webhooks ("v1", HMAC-SHA256) signing and verification.
//!
//! Svix signs `{id}.{timestamp}.{body}` with HMAC-SHA256 under the endpoint
//! secret and sends `v1,<base64 tag>` entries, space separated, in the
//! signature header. Everything here is pure: the caller passes the current
//! time, which keeps the window checks testable.
//!
//! The tag is computed once per secret and compared against every `v1` entry
//! with a comparison whose running time does not depend on where the bytes
//! differ, so a forger learns nothing from timing.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::hmac;

/// Standard base64 for secrets, as forgiving as the most forgiving reference
/// library (Python's): `=` padding optional, stray low bits in the last
/// character ignored. A secret that works there must work here.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Signatures are decoded strictly (canonical padding and trailing bits), as
/// the reference libraries compare them: each tag has exactly one accepted
/// spelling.
const SIGNATURE_BASE64: GeneralPurpose = STANDARD;

const SECRET_PREFIX: &str = "whsec_";

/// How far, in seconds, a timestamp may be from now by default: the reference
/// libraries' five minutes.
pub const DEFAULT_TOLERANCE: u64 = 300;

/// The signing secrets a delivery may be signed with. More than one is how a
/// user rotates: during the overlap both Clerk endpoints deliver.
///
/// `Debug` never shows key material.
#[derive(Clone)]
pub struct Secrets {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.keys.len())
    }
}

/// Why a secret could not be used. Positions are 1-based so they match what a
/// person counts; the secret text itself is never included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no signing secret was given")]
    Missing,
    #[error("signing secret #{0} is empty")]
    Empty(usize),
    #[error(
        "signing secret #{0} is not valid base64 (expected whsec_ followed by standard base64)"
    )]
    NotBase64(usize),
    #[error("signing secret #{0} starts like a signature (v1,...), not a whsec_ secret")]
    LooksLikeSignature(usize),
}

/// `v1`, `v1a`, `v2`: what a pasted signature header starts with. Such a
/// token happens to be valid base64, so it must be caught by name.
fn is_signature_version(token: &str) -> bool {
    token
        .strip_prefix('v')
        .map(|rest| rest.trim_end_matches('a'))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

impl Secrets {
    /// Parses one or more secrets separated by whitespace or commas. Each is
    /// `whsec_` + base64, or bare base64; the HMAC key is the decoded bytes.
    ///
    /// # Errors
    /// [`SecretError`] when there is no secret, one is empty, or one is not
    /// base64.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        let tokens = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty());
        for (i, token) in tokens.enumerate() {
            let n = i + 1;
            if is_signature_version(token) {
                return Err(SecretError::LooksLikeSignature(n));
            }
            let encoded = token.strip_prefix(SECRET_PREFIX).unwrap_or(token);
            if encoded.is_empty() {
                return Err(SecretError::Empty(n));
            }
            let bytes = SECRET_BASE64
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64(n))?;
            if bytes.is_empty() {
                return Err(SecretError::Empty(n));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
        }
        if keys.is_empty() {
            return Err(SecretError::Missing);
        }
        Ok(Self { keys })
    }

    /// How many secrets are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: parsing refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `v1,<base64>` signature header value for a delivery, signed with
    /// the first secret (the one a sender would use).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = tag(&self.keys[0], id, timestamp, body);
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// Checks the timestamp window, then every `v1` entry of `signature`
    /// against every secret.
    ///
    /// `now` is Unix seconds; `tolerance` is how far the timestamp may be from
    /// it in either direction.
    ///
    /// # Errors
    /// [`VerifyError`] says which check failed.
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        signature: &str,
        body: &[u8],
        now: i64,
        tolerance: u64,
    ) -> Result<(), VerifyError> {
        check_window(timestamp, now, tolerance)?;
        if self.matches(id, timestamp, signature, body) {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }

    /// True when some `v1` entry of `signature` is the tag of the delivery
    /// under some secret. Ignores the clock.
    pub fn matches(&self, id: &str, timestamp: i64, signature: &str, body: &[u8]) -> bool {
        let candidates: Vec<Vec<u8>> = v1_entries(signature).collect();
        if candidates.is_empty() {
            return false;
        }
        let mut found = false;
        for key in &self.keys {
            let expected = tag(key, id, timestamp, body);
            for candidate in &candidates {
                // No early exit: the work done is the same wherever a match is.
                found |= constant_time_eq(expected.as_ref(), candidate);
            }
        }
        found
    }
}

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no matching v1 signature (wrong secret, or the body was changed)")]
    NoMatch,
    #[error("timestamp too old: {0} s before now, beyond the tolerance")]
    TooOld(u64),
    #[error("timestamp too new: {0} s after now, beyond the tolerance")]
    TooNew(u64),
}

/// Rejects a timestamp further than `tolerance` seconds from `now`; the edge
/// itself is allowed, as in the reference libraries.
///
/// # Errors
/// [`VerifyError::TooOld`] or [`VerifyError::TooNew`] with the distance.
pub fn check_window(timestamp: i64, now: i64, tolerance: u64) -> Result<(), VerifyError> {
    let distance = (i128::from(now) - i128::from(timestamp)).unsigned_abs();
    if distance <= u128::from(tolerance) {
        return Ok(());
    }
    let secs = u64::try_from(distance).unwrap_or(u64::MAX);
    if timestamp < now {
        Err(VerifyError::TooOld(secs))
    } else {
        Err(VerifyError::TooNew(secs))
    }
}

/// Whether `id` is one the receiver takes in `svix-id`: 1 to 256 visible
/// ASCII characters (Svix's own are about 31). `sign` holds its `--id` to
/// the same rule, so what it prints is deliverable.
pub fn is_valid_id(id: &str) -> bool {
    const MAX_ID_LEN: usize = 256;
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a timestamp header strictly, as a 64-bit integer of ASCII digits:
/// no sign, no spaces. A far-off time is well-formed; the time window then
/// refuses it (its arithmetic is done in 128 bits).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The decoded signatures of the well-formed `v1` entries. Entries of other
/// versions (`v1a`, `v2`), without a comma, or with bad base64 are skipped.
fn v1_entries(header: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| SIGNATURE_BASE64.decode(sig).ok())
        .filter(|sig| sig.len() == hmac::HMAC_SHA256.digest_algorithm().output_len())
}

fn tag(key: &hmac::Key, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

/// Compares without branching on the data, so the time taken does not tell
/// how many leading bytes were right. Lengths are public (always 32 here).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../tests/fixtures/standard-webhooks-vectors.json");

    fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).expect("vectors file is JSON")
    }

    fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector lacks {name}"))
    }

    /// The vector's payload: given literally, or as a repeated character.
    fn payload(v: &serde_json::Value) -> Vec<u8> {
        if let Some(p) = v["payload"].as_str() {
            return p.as_bytes().to_vec();
        }
        let generator = &v["payload_generator"];
        let count = generator["count"].as_u64().expect("generator count");
        field(generator, "repeat_char")
            .repeat(usize::try_from(count).unwrap())
            .into_bytes()
    }

    /// Verifies a vector with the clock set to its own timestamp.
    fn check(v: &serde_json::Value, header: &str) -> Result<(), VerifyError> {
        let secrets = Secrets::parse(field(v, "secret")).expect("vector secret parses");
        let ts = parse_timestamp(field(v, "timestamp")).expect("vector timestamp parses");
        secrets.verify(field(v, "msg_id"), ts, header, &payload(v), ts, 300)
    }

    #[test]
    fn every_published_valid_vector_verifies_and_signs_identically() {
        let all = vectors();
        let valid = all["valid_hmac"].as_array().expect("valid_hmac");
        assert!(valid.len() >= 5, "the vectors file lost its entries");
        for v in valid {
            let name = field(v, "name");
            let expected = field(v, "expected_signature");
            if name == "derived_compact_json_variant" {
                // Its payload differs from what the canonical signature covers:
                // a re-serialized body must not verify.
                let canonical = &valid[0];
                let sig = field(canonical, "expected_signature");
                assert_eq!(check(v, sig), Err(VerifyError::NoMatch), "{name}");
            }
            assert_eq!(check(v, expected), Ok(()), "{name}");
            let secrets = Secrets::parse(field(v, "secret")).unwrap();
            let ts = parse_timestamp(field(v, "timestamp")).unwrap();
            let signed = secrets.sign(field(v, "msg_id"), ts, &payload(v));
            assert_eq!(signed, expected, "{name}");
        }
    }

    #[test]
    fn every_published_invalid_header_is_rejected() {
        let all = vectors();
        let invalid = all["invalid_signature_header"].as_array().expect("invalid");
        assert!(!invalid.is_empty());
        for v in invalid {
            let header = field(v, "signature_header");
            assert_eq!(
                check(v, header),
                Err(VerifyError::NoMatch),
                "{}",
                field(v, "name")
            );
        }
    }

    #[test]
    fn multi_signature_headers_follow_their_expectation() {
        let all = vectors();
        for v in all["multi_signature_header"].as_array().expect("multi") {
            let result = check(v, field(v, "signature_header"));
            match field(v, "expect") {
                "valid" => assert_eq!(result, Ok(()), "{}", field(v, "name")),
                _ => assert_eq!(result, Err(VerifyError::NoMatch), "{}", field(v, "name")),
            }
        }
    }

    #[test]
    fn ed25519_entries_are_not_accepted_as_hmac() {
        let all = vectors();
        let v = &all["valid_ed25519"][0];
        let canonical = &all["valid_hmac"][0];
        // Same message as the canonical vector, but only a v1a entry.
        assert_eq!(
            check(canonical, field(v, "expected_signature")),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secret_decoding_follows_the_vectors() {
        let all = vectors();
        let canonical = &all["valid_hmac"][0];
        for case in all["secret_decoding"].as_array().expect("secret_decoding") {
            let input = field(case, "input");
            let parsed = Secrets::parse(input);
            if case.get("decoded_len").is_none() {
                assert!(parsed.is_err(), "{input:?} must be refused");
                continue;
            }
            let secrets = parsed.unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let want = case
                .get("derived_signature_for_canonical_msg")
                .and_then(|s| s.as_str())
                .unwrap_or_else(|| field(canonical, "expected_signature"));
            let ts = parse_timestamp(field(canonical, "timestamp")).unwrap();
            let got = secrets.sign(
                field(canonical, "msg_id"),
                ts,
                field(canonical, "payload").as_bytes(),
            );
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn secret_lists_and_errors() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let b = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(Secrets::parse(&format!("{a},{b}")).unwrap().len(), 2);
        assert_eq!(Secrets::parse(&format!(" {a}\n\t{b} ,")).unwrap().len(), 2);
        assert_eq!(Secrets::parse("").unwrap_err(), SecretError::Missing);
        assert_eq!(Secrets::parse(" , \n").unwrap_err(), SecretError::Missing);
        assert_eq!(Secrets::parse("whsec_").unwrap_err(), SecretError::Empty(1));
        assert_eq!(
            Secrets::parse(&format!("{a} whsec_***")).unwrap_err(),
            SecretError::NotBase64(2)
        );
        // A pasted signature ("v1,...") is not a secret.
        assert!(Secrets::parse("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=").is_err());
        let shown = format!("{:?}", Secrets::parse(a).unwrap());
        assert!(!shown.contains("MfKQ"), "{shown}");
    }

    #[test]
    fn any_of_several_secrets_verifies() {
        let signer = Secrets::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let both = Secrets::parse(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        )
        .unwrap();
        let other = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signer.sign("msg_1", 1_700_000_000, b"{}");
        assert_eq!(
            both.verify("msg_1", 1_700_000_000, &sig, b"{}", 1_700_000_000, 300),
            Ok(())
        );
        assert_eq!(
            other.verify("msg_1", 1_700_000_000, &sig, b"{}", 1_700_000_000, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn the_window_is_inclusive_in_both_directions() {
        let now = 1_700_000_000;
        assert_eq!(check_window(now, now, 300), Ok(()));
        assert_eq!(check_window(now - 300, now, 300), Ok(()));
        assert_eq!(check_window(now + 300, now, 300), Ok(()));
        assert_eq!(
            check_window(now - 301, now, 300),
            Err(VerifyError::TooOld(301))
        );
        assert_eq!(
            check_window(now + 301, now, 300),
            Err(VerifyError::TooNew(301))
        );
        assert_eq!(check_window(0, i64::MAX, u64::MAX), Ok(()));
        assert!(check_window(i64::MIN, i64::MAX, 0).is_err());
    }

    #[test]
    fn timestamps_are_parsed_strictly() {
        assert_eq!(parse_timestamp("1614265330"), Some(1_614_265_330));
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(
            parse_timestamp("1000000000000000"),
            Some(1_000_000_000_000_000)
        );
        assert_eq!(parse_timestamp("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "9223372036854775808",
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "hello",
            "1e9",
            "9999999999999999999999",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_signature_has_one_spelling() {
        let all = vectors();
        let v = &all["valid_hmac"][0];
        let sig = field(v, "expected_signature");
        assert!(sig.ends_with('='));
        // Same bytes without padding, or with other trailing bits: refused,
        // as the reference libraries refuse them.
        assert_eq!(
            check(v, sig.trim_end_matches('=')),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(v, &sig.replace("1OE=", "1OF=")),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn odd_signature_headers_never_panic() {
        let s = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        for header in [
            "",
            " ",
            ",",
            ",,,",
            "v1",
            "v1,",
            "v1,,",
            "v1,=",
            "v1,====",
            "\u{e9},\u{e9}",
            "v1,a b,c",
        ] {
            assert!(!s.matches("msg", 1, header, b"{}"), "{header:?}");
        }
    }
}
