//! Bearer-token check for mutating routes (and reads, when configured).

use subtle::ConstantTimeEq;

use crate::error::Error;

/// Ok when no token is configured or the `Authorization` header carries it.
pub fn check(expected: Option<&str>, header_value: Option<&str>) -> Result<(), Error> {
    let Some(expected) = expected else { return Ok(()) };
    let presented = header_value.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(Error::Unauthorized),
    }
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
    }
}
