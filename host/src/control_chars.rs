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

/// Pushes `c` to `out` as it may be shown: a C0 control as its [`picture`]; a C1 control (an
/// 8-bit escape such as CSI, U+009B) or a bidirectional override, which a terminal or a
/// browser would act on and has no picture, as its code (`⟨U+009B⟩`: brackets that need no
/// escaping in HTML); anything else as is.
pub fn push_visible(out: &mut String, c: char) {
    match c {
        '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            out.push_str(&format!("\u{27e8}U+{:04X}\u{27e9}", c as u32));
        }
        _ => out.push(picture(c).unwrap_or(c)),
    }
}

/// `text` with each control character made visible ([`push_visible`]).
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_visible(&mut out, c);
    }
    out
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
        assert_eq!(
            visible("x\u{9b}31m\u{202e}y \u{e9}"),
            "x\u{27e8}U+009B\u{27e9}31m\u{27e8}U+202E\u{27e9}y \u{e9}"
        );
    }
}
