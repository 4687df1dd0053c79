//! Join tokens: HMAC-SHA256-signed, expiring, scoped to one consult and one
//! role.
//!
//! Format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256 tag)>`, the tag
//! taken over `v1.<claims>`. The claims carry ids and a role only, never
//! patient data, since tokens end up in browser memory and proxies' logs.

use aws_lc_rs::{hmac, rand::SecureRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Shortest signing key accepted, in bytes (the HMAC-SHA256 block strength).
pub const MIN_KEY_LEN: usize = 32;

const PREFIX: &str = "v1.";

/// A participant's role in a consult.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The patient: publishes and subscribes.
    Patient,
    /// A clinician: publishes, subscribes and may end the consult.
    Clinician,
    /// An observer (student, interpreter on listen): subscribes only.
    Observer,
}

impl Role {
    /// The role's name as in JSON and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Clinician => "clinician",
            Self::Observer => "observer",
        }
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The consult it is valid for.
    pub consult: String,
    /// The participant it was issued to.
    pub participant: String,
    /// The participant's role.
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds (exclusive).
    pub exp: u64,
}

/// Why a token was not accepted. `Missing`, `Malformed`, `BadSignature` and
/// `Expired` mean "not authenticated" (HTTP 401); `WrongConsult` and
/// `WrongRole` mean "authenticated but not allowed" (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bearer token in the request.
    #[error("no bearer token")]
    Missing,
    /// Not a token of this format.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify with this appliance's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Valid, but for another consult.
    #[error("token is for another consult")]
    WrongConsult,
    /// Valid, but the role may not do this.
    #[error("role {0} may not do this")]
    WrongRole(&'static str),
}

impl TokenError {
    /// True for the errors that mean "not authenticated" (401).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Malformed | Self::BadSignature | Self::Expired
        )
    }
}

/// A signing key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Too short to be a key.
    #[error("signing key has {0} bytes; at least {MIN_KEY_LEN} are needed")]
    TooShort(usize),
    /// The system RNG failed.
    #[error("random generator failed")]
    Random,
}

/// Issues and verifies tokens with one HMAC key.
pub struct TokenSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// A signer with `secret` as its HMAC-SHA256 key.
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(secret.len()));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// A signer with a fresh random 32-byte key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; MIN_KEY_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| KeyError::Random)?;
        Self::new(&secret)
    }

    /// Signs `claims` into a token string.
    pub fn issue(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).expect("claims serialize");
        let mut token = String::with_capacity(256);
        token.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let tag = hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
        token
    }

    /// Checks the signature and expiry (at Unix second `now`) and returns the
    /// claims. Scope is checked by [`Claims::authorize`].
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (claims_b64, tag_b64) = body.split_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &token[..PREFIX.len() + claims_b64.len()];
        // The signature is checked before the claims are parsed, so nothing
        // an attacker wrote reaches the JSON parser.
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

impl Claims {
    /// Claims for `participant` as `role` in `consult`, valid for
    /// `lifetime_secs` from `now`.
    pub fn new(consult: &str, participant: &str, role: Role, now: u64, lifetime_secs: u64) -> Self {
        Self {
            consult: consult.to_owned(),
            participant: participant.to_owned(),
            role,
            iat: now,
            exp: now.saturating_add(lifetime_secs),
        }
    }

    /// Allows the holder to act on `consult` if its role is one of `roles`.
    pub fn authorize(&self, consult: &str, roles: &[Role]) -> Result<(), TokenError> {
        if self.consult != consult {
            return Err(TokenError::WrongConsult);
        }
        if !roles.contains(&self.role) {
            return Err(TokenError::WrongRole(self.role.as_str()));
        }
        Ok(())
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(header: Option<&str>) -> Result<&str, TokenError> {
    let value = header.ok_or(TokenError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// Constant-time comparison of a presented admin token with the configured
/// one; an empty configured token matches nothing.
pub fn admin_token_matches(configured: &str, presented: &str) -> bool {
    !configured.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            configured.as_bytes(),
            presented.as_bytes(),
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trip() {
        let s = signer();
        let c = Claims::new("c1", "p1", Role::Patient, 1000, 60);
        let t = s.issue(&c);
        assert!(t.starts_with("v1."));
        assert_eq!(s.verify(&t, 1059).unwrap(), c);
    }

    #[test]
    fn expired_at_exp() {
        let s = signer();
        let t = s.issue(&Claims::new("c1", "p1", Role::Patient, 1000, 60));
        assert_eq!(s.verify(&t, 1060), Err(TokenError::Expired));
    }

    #[test]
    fn other_key_fails() {
        let t = signer().issue(&Claims::new("c1", "p1", Role::Patient, 1000, 60));
        let other = TokenSigner::new(&[8u8; 32]).unwrap();
        assert_eq!(other.verify(&t, 1001), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_claims_fail() {
        let s = signer();
        let t = s.issue(&Claims::new("c1", "p1", Role::Observer, 1000, 60));
        let (_, rest) = t.split_at(3);
        let (_, tag) = rest.split_once('.').unwrap();
        let forged_claims = Claims::new("c1", "p1", Role::Clinician, 1000, 60);
        let forged = format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap()),
            tag
        );
        assert_eq!(s.verify(&forged, 1001), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let s = signer();
        for t in ["", "v1.", "v2.a.b", "v1.abc", "v1.abc.!!!"] {
            assert_eq!(s.verify(t, 0), Err(TokenError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn scope() {
        let c = Claims::new("c1", "p1", Role::Observer, 0, 60);
        assert_eq!(c.authorize("c1", &[Role::Observer]), Ok(()));
        assert_eq!(
            c.authorize("c2", &[Role::Observer]),
            Err(TokenError::WrongConsult)
        );
        let e = c
            .authorize("c1", &[Role::Patient, Role::Clinician])
            .unwrap_err();
        assert_eq!(e, TokenError::WrongRole("observer"));
        assert!(!e.is_unauthenticated());
        assert!(TokenError::Expired.is_unauthenticated());
    }

    #[test]
    fn short_key_rejected() {
        assert!(matches!(
            TokenSigner::new(&[0; 31]),
            Err(KeyError::TooShort(31))
        ));
        assert!(TokenSigner::generate().is_ok());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(TokenError::Missing));
        assert_eq!(bearer(Some("Basic abc")), Err(TokenError::Malformed));
        assert_eq!(bearer(Some("Bearer ")), Err(TokenError::Missing));
    }

    #[test]
    fn admin_token() {
        assert!(admin_token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!admin_token_matches("0123456789abcdef", "0123456789abcdeg"));
        assert!(!admin_token_matches("", ""));
    }
}
