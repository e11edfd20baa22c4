//! Collects every field error of a request before answering, so a client fixes them all at once.
//!
//! Request DTOs keep their fields optional and are turned into domain commands through a
//! [`Validator`]; domain newtypes do the parsing (parse, don't validate).

use crate::error::{ApiError, ApiResult, FieldError};
use std::fmt::Display;

#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A required field: absent → "is required"; present → parsed by `parse`.
    pub fn required<U, T, E: Display>(
        &mut self,
        field: &str,
        value: Option<U>,
        parse: impl FnOnce(U) -> Result<T, E>,
    ) -> Option<T> {
        match value {
            None => {
                self.add(field, "is required");
                None
            }
            Some(v) => self.parse(field, parse(v)),
        }
    }

    /// An optional field: absent → `Ok(None)`; present → parsed by `parse`.
    pub fn optional<U, T, E: Display>(
        &mut self,
        field: &str,
        value: Option<U>,
        parse: impl FnOnce(U) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match value {
            None => Some(None),
            Some(v) => self.parse(field, parse(v)).map(Some),
        }
    }

    pub fn parse<T, E: Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// A `lat`/`lon` pair parsed by [`crate::geo::optional_point`] or [`crate::geo::optional_pair`].
    pub fn point(
        &mut self,
        parsed: Result<Option<crate::geo::GeoPoint>, Vec<(&'static str, String)>>,
    ) -> Option<crate::geo::GeoPoint> {
        parsed.unwrap_or_else(|errors| {
            for (field, message) in errors {
                self.add(field, message);
            }
            None
        })
    }

    pub fn check(&mut self, field: &str, ok: bool, message: &str) {
        if !ok {
            self.add(field, message);
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// 422 with every collected error, or `Ok` when there were none.
    pub fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::validation(self.errors)) }
    }
}

/// Free text as users type it: trimmed, `min..=max` characters, no control characters (line breaks
/// and tabs allowed when `multiline`), and something visible when it may not be empty.
pub fn text(raw: &str, min: usize, max: usize, multiline: bool) -> Result<String, String> {
    let value = raw.trim();
    let len = value.chars().count();
    if len == 0 && min > 0 {
        return Err("must not be empty".into());
    }
    if min > 0 && value.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err("must contain visible characters".into());
    }
    if len < min {
        return Err(format!("must be at least {min} characters"));
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t'))) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// Characters that take no room: zero-width spaces and joiners, direction marks and overrides,
/// invisible operators, the byte-order mark, the soft hyphen. Fine inside text, but text made only
/// of them looks empty (a "name" nobody can see).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}')
}

/// Optional single-line text: blank means absent.
pub fn optional_text(raw: &str, max: usize) -> Result<Option<String>, String> {
    if raw.trim().is_empty() { Ok(None) } else { text(raw, 1, max, false).map(Some) }
}

/// Unwraps a value the validator has vouched for (after [`Validator::finish`] returned `Ok`).
pub fn validated<T>(value: Option<T>) -> T {
    value.expect("validator reported no error for this field")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_printable() {
        assert_eq!(text("  hi  ", 1, 10, false).unwrap(), "hi");
        assert_eq!(text("   ", 1, 10, false).unwrap_err(), "must not be empty");
        assert_eq!(text("", 0, 10, false).unwrap(), "");
        assert!(text("abcdef", 1, 5, false).is_err());
        assert!(text("ab", 3, 5, false).is_err());
        assert!(text("line\nbreak", 1, 20, false).is_err());
        assert!(text("line\nbreak", 1, 20, true).is_ok());
        assert_eq!(optional_text("  ", 10).unwrap(), None);
        assert_eq!(optional_text(" x ", 10).unwrap(), Some("x".into()));
        assert!(text("\u{200b}\u{2060}\u{feff}", 1, 10, false).is_err());
        assert!(text("a\u{200d}b", 1, 10, false).is_ok());
    }

    #[test]
    fn collects_every_missing_and_invalid_field() {
        let mut v = Validator::new();
        let a: Option<u32> = v.required("a", None::<&str>, str::parse);
        let b: Option<u32> = v.required("b", Some("x"), str::parse);
        let c: Option<u32> = v.required("c", Some("7"), str::parse);
        let d: Option<Option<u32>> = v.optional("d", None::<&str>, str::parse);
        assert!(a.is_none() && b.is_none());
        assert_eq!(c, Some(7));
        assert_eq!(d, Some(None));
        let err = v.finish().unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "b"]);
    }
}
