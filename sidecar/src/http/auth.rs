//! Bearer-token check for mutating routes (and reads, when configured).

use subtle::ConstantTimeEq;

use crate::error::Error;

/// Ok when no token is configured or the `Authorization` header carries it.
pub fn check(expected: Option<&str>, header_value: Option<&str>) -> Result<(), Error> {
    let Some(expected) = expected else { return Ok(()) };
    match header_value.and_then(bearer_credentials) {
        Some(p) if bool::from(p.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(Error::Unauthorized),
    }
}

/// The credentials of a `Bearer` authorization: the scheme is case-insensitive
/// (RFC 9110 section 11.1), so `bearer x` and `BEARER x` count as well.
fn bearer_credentials(header_value: &str) -> Option<&str> {
    let (scheme, credentials) = header_value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_when_no_token_configured() {
        assert!(check(None, None).is_ok());
    }

    #[test]
    fn requires_the_exact_bearer_token() {
        let t = Some("s3cret-token-0123");
        assert!(check(t, Some("Bearer s3cret-token-0123")).is_ok());
        assert!(matches!(check(t, None), Err(Error::Unauthorized)));
        assert!(check(t, Some("Bearer s3cret-token-0124")).is_err());
        assert!(check(t, Some("Basic s3cret-token-0123")).is_err());
        assert!(check(t, Some("Bearer ")).is_err());
        assert!(check(t, Some("Bearers3cret-token-0123")).is_err());
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let t = Some("s3cret-token-0123");
        for header in ["bearer s3cret-token-0123", "BEARER s3cret-token-0123", "Bearer  s3cret-token-0123"] {
            assert!(check(t, Some(header)).is_ok(), "{header}");
        }
    }
}
