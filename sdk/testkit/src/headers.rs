//! Header lists as tests read them: ordered `(name, value)` pairs, names lower-case, looked
//! up case-insensitively.

use bytes::Bytes;

/// An ordered list of headers (pseudo-headers first where a head has them).
///
/// Names are lower-case; values that are not UTF-8 are converted lossily.
///
/// ```
/// use meshgate_testkit::Headers;
/// let h = Headers::from_pairs(&[(":status", "200"), ("x-a", "1"), ("X-A", "2")]);
/// assert_eq!(h.get("x-a"), Some("1"));
/// assert_eq!(h.get_all("x-a"), vec!["1", "2"]);
/// assert!(!h.contains("x-b"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// Headers from `pairs` (names are lower-cased).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
        )
    }

    pub(crate) fn from_owned(pairs: &[(String, Bytes)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
        )
    }

    pub(crate) fn from_map(map: &http::HeaderMap) -> Headers {
        let mut h = Headers::default();
        h.extend_map(map);
        h
    }

    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push((
            name.to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }

    pub(crate) fn extend_map(&mut self, map: &http::HeaderMap) {
        for (k, v) in map {
            self.push(k.as_str(), v.as_bytes());
        }
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The entries as owned pairs.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
