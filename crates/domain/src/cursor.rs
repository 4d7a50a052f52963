use uuid::Uuid;

use crate::FieldError;

/// An opaque keyset-pagination position: the id of the last task of a page.
///
/// Ids are UUIDv7, so "newer than" is "greater than"; a page after this cursor holds
/// strictly older tasks, which makes pages stable while new tasks are inserted. On the
/// wire it is 32 lowercase hex digits — a shape a schema can state exactly (so every
/// token matching `^[0-9a-f]{32}$` is accepted); clients must still treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last id already returned.
    pub after: Uuid,
}

/// The token's pattern, for API documents.
pub const CURSOR_PATTERN: &str = "^[0-9a-f]{32}$";

impl Cursor {
    /// The opaque token clients pass back.
    #[must_use]
    pub fn encode(&self) -> String {
        self.after.simple().to_string()
    }

    /// Parses a token produced by [`Cursor::encode`].
    ///
    /// # Errors
    /// A field error for `cursor` when the token is not one of ours.
    pub fn decode(token: &str) -> Result<Self, FieldError> {
        let well_formed = token.len() == 32
            && token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(FieldError::new("cursor", "is not a valid cursor"));
        }
        Uuid::try_parse(token)
            .map(|after| Self { after })
            .map_err(|_| FieldError::new("cursor", "is not a valid cursor"))
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
