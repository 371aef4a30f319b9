//! Small text helpers shared by the checks and reports.

/// How many names a message lists before it says "and N more": enough to act on, short
/// enough to read when 300 nodes fail together.
pub const MAX_LISTED: usize = 8;

/// `a, b, c and 5 more`.
pub fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = names
        .iter()
        .take(MAX_LISTED)
        .map(|n| n.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", names.len() - MAX_LISTED));
    }
    out
}

/// `1.23s`, or `-` when unknown.
pub fn secs(d: Option<f64>) -> String {
    d.map_or_else(|| "-".to_string(), |s| format!("{s:.2}s"))
}

/// Escapes text for XML/SVG attributes and content.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// First 8 characters of a long hex id: enough to tell messages apart in text.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let s = name_list(&names);
        assert!(s.ends_with("n7 and 4 more"), "{s}");
        assert_eq!(name_list(&["a", "b"]), "a, b");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(xml_escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
