//! `ApiJson<T>`: the only way request bodies are read. Wrong content type → 415, body over the
//! limit → 413, unparseable → 400, well-formed but wrong shape → 422 naming the field.

use crate::error::{ApiError, ErrorCode, FieldError};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType)
                .with_detail("send the body as Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            ApiError::new(ErrorCode::for_status(rejection.status())).with_detail(rejection.body_text())
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Parses a JSON body, classifying failures as 400 (not JSON) or 422 (wrong shape, field named).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match value {
        Ok(value) => {
            de.end().map_err(|e| ApiError::new(ErrorCode::MalformedJson).with_detail(e.to_string()))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    Err(ApiError::validation(vec![FieldError::new(field_name(&path, &message), message)]))
                }
                _ => Err(ApiError::new(ErrorCode::MalformedJson).with_detail(inner.to_string())),
            }
        }
    }
}

/// serde reports a missing/unknown field at its parent; name the field itself.
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (named, path) {
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "body".to_owned(),
        (None, path) => path.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        age: u32,
        nested: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        lat: f64,
    }

    #[test]
    fn syntax_errors_are_400() {
        let err = parse_json::<Body>(b"{\"email\": ").unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
        let err = parse_json::<Body>(br#"{"email": "a", "age": 1} trailing"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
    }

    #[test]
    fn shape_errors_are_422_naming_the_field() {
        let err = parse_json::<Body>(br#"{"email": "a@b.c"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed);
        assert_eq!(err.errors[0].field, "age");

        let err = parse_json::<Body>(br#"{"email": "a@b.c", "age": "old"}"#).unwrap_err();
        assert_eq!(err.errors[0].field, "age");

        let err = parse_json::<Body>(br#"{"email": "a", "age": 1, "nested": {"lat": "x"}}"#).unwrap_err();
        assert_eq!(err.errors[0].field, "nested.lat");
    }
}
