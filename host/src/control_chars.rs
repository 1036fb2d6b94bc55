//! Control characters made visible: a completion or a dataset record may hold any (NUL,
//! escape sequences, BEL), which a terminal would act on and an HTML file may not carry.

/// The symbol shown for a control character other than tab and line ends (U+0000 as `␀`,
/// ESC as `␛`, DEL as `␡`); `None` for any other character.
pub fn picture(c: char) -> Option<char> {
    match c {
        '\t' | '\n' | '\r' => None,
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32),
        '\u{7f}' => Some('\u{2421}'),
        _ => None,
    }
}

/// `text` with each control character shown as its [`picture`].
pub fn visible(text: &str) -> String {
    text.chars().map(|c| picture(c).unwrap_or(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_their_pictures_and_lines_stay() {
        assert_eq!(
            visible("a\u{0}b\u{1b}[31m\u{7}\u{7f}\n\tc"),
            "a\u{2400}b\u{241b}[31m\u{2407}\u{2421}\n\tc"
        );
    }
}
