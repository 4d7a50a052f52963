use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::FieldError;

const VERSION_TAG: &str = "v1:";

/// An opaque keyset-pagination position: the id of the last task of a page.
///
/// Ids are UUIDv7, so "newer than" is "greater than"; a page after this cursor holds
/// strictly older tasks, which makes pages stable while new tasks are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last id already returned.
    pub after: Uuid,
}

impl Cursor {
    /// The opaque token clients pass back.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION_TAG}{}", self.after.simple()))
    }

    /// Parses a token produced by [`Cursor::encode`].
    ///
    /// # Errors
    /// A field error for `cursor` when the token is not one of ours.
    pub fn decode(token: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new("cursor", "is not a valid cursor");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let id = text.strip_prefix(VERSION_TAG).ok_or_else(invalid)?;
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Uuid::try_parse(id)
            .map(|after| Self { after })
            .map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn round_trips(bytes in any::<[u8; 16]>()) {
            let cursor = Cursor { after: Uuid::from_bytes(bytes) };
            prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }

        #[test]
        fn garbage_is_rejected_not_panicking(token in ".{0,80}") {
            if let Ok(c) = Cursor::decode(&token) {
                prop_assert_eq!(c.encode(), token);
            }
        }
    }
}
