//! Query strings and form bodies, read leniently (any order, repeated
//! names, lossy UTF-8) and checked strictly (a bad number or an unknown
//! choice is a 400 page naming the parameter, never a silent default).

use std::str::FromStr;

use crate::error::{PageError, PageResult};

/// The `name=value` pairs of a query string or form body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a query string or
    /// a form body).
    pub fn parse(text: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(text)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The first non-empty value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .find(|value| !value.is_empty())
    }

    /// Every non-empty value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
            .collect()
    }

    /// `name` as a number, `default` when absent.
    pub fn number<T: FromStr>(&self, name: &str, default: T) -> PageResult<T> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                PageError::bad_request(format!(
                    "parameter `{name}`: `{text}` is not a valid number here"
                ))
            }),
        }
    }

    /// `name` as one of `allowed`, `default` when absent.
    pub fn choice<'a>(
        &self,
        name: &str,
        allowed: &[&'a str],
        default: &'a str,
    ) -> PageResult<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => allowed
                .iter()
                .copied()
                .find(|choice| *choice == text)
                .ok_or_else(|| {
                    PageError::bad_request(format!(
                        "parameter `{name}`: `{text}` is not one of {}",
                        allowed.join(", ")
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_checked() {
        let params = Params::parse(b"run=a&run=&run=b%20c&page=x&sort=loss&q=%3Cscript%3E");
        assert_eq!(params.all("run"), ["a", "b c"]);
        assert_eq!(params.get("q"), Some("<script>"));
        assert!(params
            .number::<u64>("page", 1)
            .unwrap_err()
            .message
            .contains("page"));
        assert_eq!(params.number::<u64>("missing", 7).unwrap(), 7);
        assert_eq!(
            params
                .choice("sort", &["started", "loss"], "started")
                .unwrap(),
            "loss"
        );
        assert_eq!(
            params.choice("order", &["asc", "desc"], "desc").unwrap(),
            "desc"
        );
        assert!(Params::parse(b"sort=evil")
            .choice("sort", &["loss"], "loss")
            .is_err());
    }
}
