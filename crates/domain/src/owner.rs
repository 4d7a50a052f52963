/// Who a task belongs to: the authenticated principal that created it, as an opaque id
/// (e.g. `token:ci` or `oidc:<subject>`). Every read and write is scoped to one owner, so a
/// caller never sees, changes or learns of another owner's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(String);

/// Longest owner id, in characters (the `tasks.owner` column's limit).
pub const OWNER_MAX_CHARS: usize = 512;

impl Owner {
    /// The owner with this id, or `None` when it is empty or longer than
    /// [`OWNER_MAX_CHARS`].
    #[must_use]
    pub fn new(id: &str) -> Option<Self> {
        let chars = id.chars().count();
        (1..=OWNER_MAX_CHARS)
            .contains(&chars)
            .then(|| Self(id.to_owned()))
    }

    /// The id, as stored.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded() {
        assert_eq!(
            Owner::new("token:ci").map(|o| o.as_str().to_owned()),
            Some("token:ci".into())
        );
        assert!(Owner::new("").is_none());
        assert!(Owner::new(&"x".repeat(OWNER_MAX_CHARS)).is_some());
        assert!(Owner::new(&"x".repeat(OWNER_MAX_CHARS + 1)).is_none());
    }
}
