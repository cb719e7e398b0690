//! Text output helpers shared by the commands that print names from a snapshot (`ls`, `find`,
//! `diff`): a stored name is whatever bytes the backed-up file system (or an attacker with
//! write access to the repository) put there, and a terminal must not interpret them.

use std::borrow::Cow;

/// A name as a terminal may show it: control characters (an escape sequence in a hostile
/// snapshot could rewrite the screen) become `\xNN`. `--json` keeps the name exact.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("plain name é"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb\nc\u{9b}"), "a\\x1b[2Jb\\x0ac\\x9b");
    }
}
