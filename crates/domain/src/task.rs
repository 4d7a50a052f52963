use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::FieldError;

/// Longest title, in characters, after trimming.
pub const TITLE_MAX_CHARS: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;

/// A task's workflow state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started (the default).
    #[default]
    Todo,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
}

impl Status {
    /// Every status, in workflow order.
    pub const ALL: [Self; 3] = [Self::Todo, Self::InProgress, Self::Done];

    /// The wire and storage name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::InProgress => "in_progress",
            Self::Done => "done",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A task as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// UUIDv7: time-ordered, so ids sort newest last.
    pub id: Uuid,
    /// 1–[`TITLE_MAX_CHARS`] characters, trimmed.
    pub title: String,
    /// Up to [`DESCRIPTION_MAX_CHARS`] characters.
    pub description: Option<String>,
    /// Workflow state.
    pub status: Status,
    /// When it is due (RFC 3339).
    pub due_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Incremented on every change; the `ETag`.
    pub version: i64,
}

/// A validated creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Trimmed title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Initial status.
    pub status: Status,
    /// Due date.
    pub due_at: Option<DateTime<Utc>>,
}

/// A validated JSON merge patch: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    /// New title.
    pub title: Option<String>,
    /// New description, or `Some(None)` to clear it.
    pub description: Option<Option<String>>,
    /// New status.
    pub status: Option<Status>,
    /// New due date, or `Some(None)` to clear it.
    pub due_at: Option<Option<DateTime<Utc>>>,
}

// PostgreSQL text cannot hold U+0000; reject it here rather than fail in storage.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

const FIELDS: [&str; 4] = ["title", "description", "status", "due_at"];

fn object<'a>(input: &'a Value, errors: &mut Vec<FieldError>) -> Option<&'a Map<String, Value>> {
    let Some(map) = input.as_object() else {
        errors.push(FieldError::new("body", "expected a JSON object"));
        return None;
    };
    let mut unknown: Vec<&String> = map
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    errors.extend(
        unknown
            .into_iter()
            .map(|k| FieldError::new(k.clone(), "unknown field")),
    );
    Some(map)
}

fn title(value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    let Some(raw) = value.as_str() else {
        errors.push(FieldError::new("title", "must be a string"));
        return None;
    };
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if trimmed.contains('\0') {
        errors.push(FieldError::new("title", NUL_MESSAGE));
        None
    } else if chars == 0 {
        errors.push(FieldError::new("title", "must not be empty"));
        None
    } else if chars > TITLE_MAX_CHARS {
        errors.push(FieldError::new(
            "title",
            format!("must be at most {TITLE_MAX_CHARS} characters"),
        ));
        None
    } else {
        Some(trimmed.to_owned())
    }
}

fn description(value: &Value, errors: &mut Vec<FieldError>) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) if s.contains('\0') => {
            errors.push(FieldError::new("description", NUL_MESSAGE));
            None
        }
        Value::String(s) if s.chars().count() <= DESCRIPTION_MAX_CHARS => Some(Some(s.clone())),
        Value::String(_) => {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
            ));
            None
        }
        _ => {
            errors.push(FieldError::new("description", "must be a string or null"));
            None
        }
    }
}

fn status(value: &Value, errors: &mut Vec<FieldError>) -> Option<Status> {
    let parsed = value.as_str().and_then(Status::parse);
    if parsed.is_none() {
        errors.push(FieldError::new(
            "status",
            "must be one of todo, in_progress, done",
        ));
    }
    parsed
}

fn due_at(value: &Value, errors: &mut Vec<FieldError>) -> Option<Option<DateTime<Utc>>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            // PostgreSQL keeps microseconds; round here so what we return is what we store.
            Ok(t) => Some(Some(t.with_timezone(&Utc).trunc_subsecs(6))),
            Err(_) => {
                errors.push(FieldError::new(
                    "due_at",
                    "must be an RFC 3339 date-time or null",
                ));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(
                "due_at",
                "must be an RFC 3339 date-time or null",
            ));
            None
        }
    }
}

impl NewTask {
    /// Validates a creation request body, collecting every field error.
    ///
    /// # Errors
    /// Every invalid, missing or unknown field, sorted by field name.
    pub fn from_json(input: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(map) = object(input, &mut errors) else {
            return Err(errors);
        };
        let title = match map.get("title") {
            Some(v) => title(v, &mut errors),
            None => {
                errors.push(FieldError::new("title", "is required"));
                None
            }
        };
        let description = map
            .get("description")
            .map_or(Some(None), |v| description(v, &mut errors));
        let status = map
            .get("status")
            .map_or(Some(Status::Todo), |v| status(v, &mut errors));
        let due_at = map
            .get("due_at")
            .map_or(Some(None), |v| due_at(v, &mut errors));
        match (title, description, status, due_at) {
            (Some(title), Some(description), Some(status), Some(due_at)) if errors.is_empty() => {
                Ok(Self {
                    title,
                    description,
                    status,
                    due_at,
                })
            }
            _ => {
                errors.sort_by(|a, b| a.field.cmp(&b.field));
                Err(errors)
            }
        }
    }

    /// The task this request creates, stamped `now` with a fresh UUIDv7.
    #[must_use]
    pub fn into_task(self, now: DateTime<Utc>) -> Task {
        let now = now.trunc_subsecs(6);
        Task {
            id: Uuid::now_v7(),
            title: self.title,
            description: self.description,
            status: self.status,
            due_at: self.due_at,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

impl TaskPatch {
    /// Validates a JSON merge patch (RFC 7396) body, collecting every field error.
    ///
    /// # Errors
    /// Every invalid or unknown field; `null` for `title` or `status` (they cannot be
    /// removed).
    pub fn from_json(input: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(map) = object(input, &mut errors) else {
            return Err(errors);
        };
        let mut patch = Self::default();
        if let Some(v) = map.get("title") {
            patch.title = title(v, &mut errors);
        }
        if let Some(v) = map.get("description") {
            patch.description = description(v, &mut errors);
        }
        if let Some(v) = map.get("status") {
            patch.status = status(v, &mut errors);
        }
        if let Some(v) = map.get("due_at") {
            patch.due_at = due_at(v, &mut errors);
        }
        if errors.is_empty() {
            Ok(patch)
        } else {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            Err(errors)
        }
    }

    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn minimal_task_gets_defaults() {
        let t = NewTask::from_json(&json!({"title": "a"})).unwrap();
        assert_eq!(
            t,
            NewTask {
                title: "a".into(),
                description: None,
                status: Status::Todo,
                due_at: None
            }
        );
    }

    #[test]
    fn every_error_is_reported() {
        let errors = NewTask::from_json(&json!({
            "title": 5, "description": 1, "status": "blocked", "due_at": "tomorrow", "id": "x"
        }))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["description", "due_at", "id", "status", "title"]);
    }

    #[test]
    fn missing_title_and_non_object_bodies_fail() {
        assert_eq!(
            NewTask::from_json(&json!({})).unwrap_err()[0].message,
            "is required"
        );
        assert_eq!(
            NewTask::from_json(&json!([1])).unwrap_err()[0].field,
            "body"
        );
        assert_eq!(
            TaskPatch::from_json(&json!("x")).unwrap_err()[0].field,
            "body"
        );
    }

    #[test]
    fn title_limits_count_characters_after_trimming() {
        let at_limit = "é".repeat(TITLE_MAX_CHARS);
        assert!(NewTask::from_json(&json!({"title": format!("  {at_limit}  ")})).is_ok());
        assert!(NewTask::from_json(&json!({"title": format!("{at_limit}x")})).is_err());
        assert!(NewTask::from_json(&json!({"title": " \t\n "})).is_err());
    }

    #[test]
    fn nul_characters_are_rejected() {
        let errors =
            NewTask::from_json(&json!({"title": "a\0b", "description": "\0"})).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(TaskPatch::from_json(&json!({"title": "x\0"})).is_err());
    }

    #[test]
    fn description_limit() {
        let at_limit = "😀".repeat(DESCRIPTION_MAX_CHARS);
        assert!(NewTask::from_json(&json!({"title": "t", "description": at_limit})).is_ok());
        let over = "a".repeat(DESCRIPTION_MAX_CHARS + 1);
        assert!(NewTask::from_json(&json!({"title": "t", "description": over})).is_err());
    }

    #[test]
    fn due_at_accepts_rfc3339_with_offsets() {
        let t = NewTask::from_json(
            &json!({"title": "t", "due_at": "2030-01-02T03:04:05.1234567+02:00"}),
        )
        .unwrap();
        assert_eq!(
            t.due_at.unwrap().to_rfc3339(),
            "2030-01-02T01:04:05.123456+00:00"
        );
    }

    #[test]
    fn merge_patch_distinguishes_absent_and_null() {
        let p = TaskPatch::from_json(&json!({"description": null, "status": "done"})).unwrap();
        assert_eq!(p.description, Some(None));
        assert_eq!(p.status, Some(Status::Done));
        assert_eq!(p.title, None);
        assert!(TaskPatch::from_json(&json!({})).unwrap().is_empty());
        let errors = TaskPatch::from_json(&json!({"title": null, "status": null})).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
    }

    proptest! {
        #[test]
        fn any_title_is_accepted_iff_its_trimmed_length_is_in_range(raw in "\\PC{0,210}") {
            let result = NewTask::from_json(&json!({"title": raw}));
            let len = raw.trim().chars().count();
            prop_assert_eq!(result.is_ok(), (1..=TITLE_MAX_CHARS).contains(&len));
            if let Ok(task) = result {
                prop_assert_eq!(task.title, raw.trim());
            }
        }

        #[test]
        fn validation_never_panics_on_arbitrary_json(key in "[a-z_]{1,12}", n in any::<i64>(), s in ".*") {
            let body = json!({key.clone(): n, "title": s.clone(), "due_at": s});
            let _ = NewTask::from_json(&body);
            let _ = TaskPatch::from_json(&body);
        }
    }
}
