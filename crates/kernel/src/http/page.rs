//! Cursor pagination: `{items, next_cursor}` with an opaque cursor and a bounded `limit`.

use crate::error::{ApiError, ApiResult};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The list envelope of every collection endpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A complete list that needs no further pages.
    pub fn all(items: Vec<T>) -> Self {
        Self { items, next_cursor: None }
    }

    /// Builds a page from up to `limit + 1` fetched rows: the extra row only proves there is a
    /// next page, whose cursor is made from the last returned item.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| encode_cursor(&cursor_of(last)))
        } else {
            None
        };
        Self { items, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

/// Validated `limit` (1..=max, default when absent) and decoded `cursor` query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(limit: Option<&str>, cursor: Option<&str>, default: usize, max: usize) -> ApiResult<PageRequest> {
        let limit = match limit {
            None => default,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(ApiError::invalid_field("limit", format!("must be an integer from 1 to {max}"))),
            },
        };
        let after = match cursor {
            None | Some("") => None,
            Some(raw) => Some(
                decode_cursor(raw)
                    .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor this API issued"))?,
            ),
        };
        Ok(PageRequest { limit, after })
    }

    /// The cursor's position parsed as the list's key (an id, a sequence number); a cursor that
    /// does not parse was not issued by this list.
    pub fn position<T: std::str::FromStr>(&self) -> ApiResult<Option<T>> {
        self.after
            .as_deref()
            .map(|raw| {
                raw.parse::<T>().map_err(|_| ApiError::invalid_field("cursor", "is not a cursor this API issued"))
            })
            .transpose()
    }
}

pub fn encode_cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overfetch_yields_a_cursor_only_when_more_remain() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(decode_cursor(page.next_cursor.as_deref().unwrap()).as_deref(), Some("2"));
        let last = Page::from_overfetch(vec![1, 2], 2, |n| n.to_string());
        assert!(last.next_cursor.is_none());
    }

    #[test]
    fn limits_and_cursors_are_validated() {
        assert_eq!(PageRequest::parse(None, None, 20, 100).unwrap().limit, 20);
        assert!(PageRequest::parse(Some("0"), None, 20, 100).is_err());
        assert!(PageRequest::parse(Some("100000"), None, 20, 100).is_err());
        assert!(PageRequest::parse(Some("abc"), None, 20, 100).is_err());
        let err = PageRequest::parse(None, Some("!!!"), 20, 100).unwrap_err();
        assert_eq!(err.errors[0].field, "cursor");
        let cursor = encode_cursor("some-id");
        assert_eq!(PageRequest::parse(None, Some(&cursor), 20, 100).unwrap().after.as_deref(), Some("some-id"));
    }
}
