//! Request parameters as Zun takes them: the query string merged with a JSON body,
//! with booleans and numbers accepted as strings (`True`, `"0.5"`).

use actix_web::HttpRequest;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Refuses a request whose body is not declared as JSON (415).
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "The request body must be JSON: send Content-Type: application/json (got '{ct}')"
        )))
    }
}

/// Query-string parameters and, when the body is a JSON object, its fields.
pub struct Params(Map<String, Value>);

impl Params {
    /// Merges `req`'s query string with `body` (which may be empty).
    pub fn parse(req: &HttpRequest, body: &[u8]) -> Result<Params, ApiError> {
        let mut map = Map::new();
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let parsed: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!("The request body is not valid JSON: {e}"))
            })?;
            match parsed {
                Value::Object(fields) => map.extend(fields),
                Value::Null => {}
                _ => {
                    return Err(ApiError::BadRequest(
                        "The request body must be a JSON object.".into(),
                    ))
                }
            }
        }
        Ok(Params(map))
    }

    /// [`Params::parse`], then [`Params::only`]`(known)`: the opening of most handlers.
    pub fn parse_only(req: &HttpRequest, body: &[u8], known: &[&str]) -> Result<Params, ApiError> {
        let p = Params::parse(req, body)?;
        p.only(known)?;
        Ok(p)
    }

    /// Refuses any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        let unknown: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ApiError::BadRequest(format!(
                "Unknown parameters: {}. Accepted here: {}.",
                unknown.join(", "),
                known.join(", ")
            )))
        }
    }

    /// The raw value of `key`, treating the string `None` (sent by Zun's clients) as absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .get(key)
            .filter(|v| !v.is_null() && v.as_str() != Some("None"))
    }

    /// A string parameter.
    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// A boolean parameter, `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        self.get(key).map_or(Ok(default), |v| flex_bool(key, v))
    }

    /// The page size of a listing, which is always in uuid order: `limit` (at most
    /// 1000, the default); a `sort_key` or `sort_dir` asking another order is refused.
    pub fn page_limit(&self) -> Result<i64, ApiError> {
        let limit = match self.uint("limit")? {
            Some(0) => {
                return Err(ApiError::BadRequest(
                    "Invalid limit 0: limit must be a positive integer".into(),
                ))
            }
            Some(n) => n.min(1000) as i64,
            None => 1000,
        };
        if let Some(k) = self.str("sort_key") {
            if k != "id" && k != "uuid" {
                return Err(ApiError::BadRequest(format!(
                    "Invalid sort_key '{k}': only id is supported"
                )));
            }
        }
        if let Some(d) = self.str("sort_dir") {
            if d != "asc" {
                return Err(ApiError::BadRequest(format!(
                    "Invalid sort_dir '{d}': only asc is supported"
                )));
            }
        }
        Ok(limit)
    }

    /// A non-negative integer parameter.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                flex_i64(key, v).and_then(|n| {
                    u64::try_from(n).map_err(|_| {
                        ApiError::BadRequest(format!("Invalid {key}: must be 0 or more"))
                    })
                })
            })
            .transpose()
    }
}

/// A boolean as oslo's strutils accepts it.
pub fn flex_bool(key: &str, v: &Value) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" | "t" => Ok(true),
            "false" | "0" | "no" | "n" | "off" | "f" => Ok(false),
            _ => Err(ApiError::BadRequest(format!(
                "Invalid {key} '{s}': use true or false"
            ))),
        },
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        other => Err(ApiError::BadRequest(format!(
            "Invalid {key} {other}: use true or false"
        ))),
    }
}

/// A number given as a JSON number or a numeric string.
pub fn flex_f64(key: &str, v: &Value) -> Result<f64, ApiError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::BadRequest(format!("Invalid {key} {v}: must be a number")))
}

/// An integer given as a JSON integer or a digit string.
pub fn flex_i64(key: &str, v: &Value) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::BadRequest(format!("Invalid {key} {v}: must be a whole number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zun_client_booleans_are_understood() {
        for (s, b) in [
            ("True", true),
            ("false", false),
            ("1", true),
            ("off", false),
        ] {
            assert_eq!(flex_bool("x", &Value::String(s.into())).unwrap(), b);
        }
        assert!(flex_bool("x", &Value::String("maybe".into())).is_err());
    }

    #[test]
    fn numbers_may_be_strings() {
        assert_eq!(flex_f64("cpu", &Value::String("0.5".into())).unwrap(), 0.5);
        assert_eq!(flex_i64("memory", &serde_json::json!(256)).unwrap(), 256);
        assert!(flex_i64("memory", &serde_json::json!("1.5")).is_err());
    }
}
