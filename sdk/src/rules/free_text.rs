//! Free-text answers: where a completion states its answer, and when two answers are the same
//! (normalised text, or numbers compared as numbers).

use super::boxed::last_boxed;
use super::text::{normalise, preprocess};

/// The answer a completion states: its last `\boxed{…}`, else the body of its last
/// `<answer>…</answer>`; `None` when it states neither.
pub fn free_text_answer(completion: &str) -> Option<&str> {
    if let Some(boxed) = last_boxed(completion) {
        return Some(boxed);
    }
    let text = preprocess(completion);
    let end = text.rfind("</answer>")?;
    let start = text[..end].rfind("<answer>")? + "<answer>".len();
    Some(&text[start..end])
}

/// An answer's text for comparison: Unicode NFKC (full-width digits, composed accents) with
/// the minus sign as `-`, lower case, whitespace runs as one space, without surrounding
/// spaces, quotes, `$` signs or final punctuation, and without a `\text{…}` wrapper.
pub fn normalise_answer(answer: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let compatible: String = answer
        .nfkc()
        .map(|c| if c == '\u{2212}' { '-' } else { c })
        .collect();
    let mut text = compatible.trim();
    if let Some(inner) = text.strip_prefix("\\text{").and_then(|t| t.strip_suffix('}')) {
        text = inner;
    }
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || "$\"'`*".contains(c));
    let trimmed = trimmed.trim_end_matches(['.', ',', ';', ':', '!', '?']);
    normalise(trimmed.trim())
}

/// The number an answer states: `1,234.5`, `-3`, `2.5e3`, `45%` or `45\%` (45), `$12` (12), a
/// fraction `3/4`, `\frac{3}{4}` or `¾`, a mixed number `1 1/2` or `1½`; `None` when it is
/// not a number.
pub fn parse_number(answer: &str) -> Option<f64> {
    let text = normalise_answer(&spaced_fractions(answer)).replace('\u{2044}', "/");
    let text = text.trim_start_matches('$');
    // `45%`, and LaTeX's `45\%`.
    let text = match text.strip_suffix('%') {
        Some(number) => number.trim_end().strip_suffix('\\').unwrap_or(number).trim_end(),
        None => text,
    };
    // `- ½` (NFKC's `- 1/2`): the sign belongs to the number.
    let signed;
    let text = match text.strip_prefix("- ") {
        Some(rest) => {
            signed = format!("-{rest}");
            signed.as_str()
        }
        None => text,
    };
    if let Some(value) = latex_fraction(text) {
        return Some(value);
    }
    parse_fraction(text).or_else(|| mixed_number(text))
}

/// `1 1/2`, `-2 3/4`: a whole number, a space, and a proper fraction.
fn mixed_number(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once(' ')?;
    let digits = whole.strip_prefix(['-', '+']).unwrap_or(whole);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !fraction.contains('/') {
        return None;
    }
    let (whole, fraction) = (parse_plain(whole)?, parse_fraction(fraction)?);
    if !(0.0..1.0).contains(&fraction) {
        return None;
    }
    Some(if whole.is_sign_negative() {
        whole - fraction
    } else {
        whole + fraction
    })
}

/// `n/d` or a plain number.
fn parse_fraction(text: &str) -> Option<f64> {
    if let Some((numerator, denominator)) = text.split_once('/') {
        let (n, d) = (parse_plain(numerator.trim())?, parse_plain(denominator.trim())?);
        return (d != 0.0).then_some(n / d);
    }
    parse_plain(text)
}

/// `\frac{n}{d}` (or `\dfrac`, `\tfrac`), with an optional sign before it.
fn latex_fraction(text: &str) -> Option<f64> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest.trim_start()),
        None => (1.0, text),
    };
    let rest = ["\\frac", "\\dfrac", "\\tfrac"]
        .iter()
        .find_map(|command| rest.strip_prefix(command))?;
    let (numerator, rest) = rest.trim_start().strip_prefix('{')?.split_once('}')?;
    let denominator = rest.trim_start().strip_prefix('{')?.strip_suffix('}')?;
    let (n, d) = (parse_plain(numerator.trim())?, parse_plain(denominator.trim())?);
    (d != 0.0).then_some(sign * n / d)
}

/// Whether `text`'s commas are thousands separators: a first group of one to three digits
/// (after a sign), then groups of exactly three, the last of which may go on with a decimal
/// part: "1,234" and "-12,345.5", not "1,2", "1,2345" or "1234,567".
fn has_thousands_separators(text: &str) -> bool {
    let groups: Vec<&[u8]> = text.split(',').map(str::as_bytes).collect();
    let digits = |g: &[u8]| g.iter().all(u8::is_ascii_digit);
    let first = groups[0]
        .strip_prefix(b"-")
        .or_else(|| groups[0].strip_prefix(b"+"))
        .unwrap_or(groups[0]);
    let last = groups.len() - 1;
    groups.len() > 1
        && (1..=3).contains(&first.len())
        && digits(first)
        && groups[1..].iter().enumerate().all(|(i, g)| {
            g.len() >= 3 && digits(&g[..3]) && (g.len() == 3 || (i + 1 == last && !g[3].is_ascii_digit()))
        })
}

fn parse_plain(text: &str) -> Option<f64> {
    let plain = if has_thousands_separators(text) {
        text.replace(',', "")
    } else {
        text.to_string()
    };
    let value: f64 = plain.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Whether a stated answer is the gold one: both numbers within `relative_tolerance` of the
/// gold (of 1 for a gold of 0), or the same normalised text. A blank gold is no answer: an
/// empty `\boxed{}` must not match it.
pub fn same_answer(answer: &str, gold: &str, relative_tolerance: f64) -> bool {
    match (parse_number(answer), parse_number(gold)) {
        // Relative to the gold alone: a dose of 0.05 is not 0.06 at a tolerance of 1%.
        (Some(a), Some(g)) => {
            let scale = if g == 0.0 { 1.0 } else { g.abs() };
            (a - g).abs() <= relative_tolerance * scale
        }
        _ => {
            let gold = normalise_answer(gold);
            !gold.is_empty() && normalise_answer(answer) == gold
        }
    }
}

/// A space before each fraction written as one (`1½` → `1 ½`, `1¹⁄₂` → `1 ¹⁄₂`): NFKC makes
/// `½` `1⁄2` and `¹` `1`, and without the space `1½` would read as 11/2.
fn spaced_fractions(answer: &str) -> String {
    let vulgar = |c: char| matches!(c, '\u{bc}'..='\u{be}' | '\u{2150}'..='\u{215e}' | '\u{2189}');
    let superscript = |c: char| {
        matches!(
            c,
            '\u{b9}' | '\u{b2}' | '\u{b3}' | '\u{2070}' | '\u{2074}'..='\u{2079}'
        )
    };
    let mut spaced = String::with_capacity(answer.len() + 4);
    let mut previous: Option<char> = None;
    for c in answer.chars() {
        let starts_a_fraction = vulgar(c) || (superscript(c) && previous.is_some_and(|p| p.is_ascii_digit()));
        if starts_a_fraction {
            spaced.push(' ');
        }
        spaced.push(c);
        previous = Some(c);
    }
    spaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stated_answer_is_the_last_box_or_answer_tag() {
        assert_eq!(free_text_answer("so \\boxed{x} or \\boxed{42}"), Some("42"));
        assert_eq!(
            free_text_answer("<think>t</think><answer> Warfarin </answer>"),
            Some(" Warfarin ")
        );
        assert_eq!(free_text_answer("it is 42"), None);
    }

    #[test]
    fn numbers_compare_as_numbers() {
        assert!(same_answer("42.0", "42", 1e-6));
        assert!(same_answer("1,234", "1234", 1e-6));
        assert!(same_answer("$12", "12", 1e-6));
        assert!(same_answer("45%", "45", 1e-6));
        assert!(same_answer("3/4", "0.75", 1e-6));
        assert!(!same_answer("42.1", "42", 1e-6));
        assert!(!same_answer("1,2", "12", 1e-6), "not a thousands separator");
        assert!(!same_answer("1,2345", "12345", 1e-6), "groups of three");
        assert!(
            !same_answer("1234,567", "1234567", 1e-6),
            "a first group of at most three"
        );
        assert!(same_answer("-12,345.5", "-12345.5", 1e-6));
        assert!(same_answer("1,234,567", "1234567", 1e-6));
        assert_eq!(
            parse_number("1,\u{e9}\u{e9}"),
            None,
            "no panic inside a character"
        );
        // Relative to the gold, however small.
        assert!(!same_answer("0.06", "0.05", 0.01));
        assert!(same_answer("0.0504", "0.05", 0.01));
        assert!(!same_answer("1e-7", "5e-7", 1e-6));
        assert!(
            same_answer("0.0000001", "0", 1e-6),
            "a gold of 0: within the tolerance of 1"
        );
        assert_eq!(parse_number("1/0"), None);
        // Fractions as people and LaTeX write them; percent as LaTeX writes it.
        assert_eq!(parse_number("\u{bd}"), Some(0.5));
        assert_eq!(parse_number("1\u{bd}"), Some(1.5), "1½ is not 11/2");
        assert_eq!(parse_number("-2 3/4"), Some(-2.75));
        assert_eq!(parse_number("1\u{2044}4"), Some(0.25), "the fraction slash");
        assert_eq!(parse_number("\\frac{1}{2}"), Some(0.5));
        assert_eq!(parse_number("-\\dfrac{3}{4}"), Some(-0.75));
        assert_eq!(parse_number("\\frac{1}{0}"), None);
        assert_eq!(parse_number("50\\%"), Some(50.0));
        assert_eq!(parse_number("50 \\%"), Some(50.0));
        assert_eq!(parse_number("1.5 2/3"), None, "a whole number before a fraction");
        assert_eq!(parse_number("2 3"), None);
        assert_eq!(parse_number("1 / 2"), Some(0.5), "spaces around the slash");
        assert_eq!(parse_number("1/ 2"), Some(0.5));
        assert_eq!(
            parse_number("1\u{b9}\u{2044}\u{2082}"),
            Some(1.5),
            "1¹⁄₂ is not 11/2"
        );
        assert_eq!(parse_number("-\u{bd}"), Some(-0.5));
        assert_eq!(parse_number("5 3/2"), None, "not a proper fraction");
        assert_eq!(parse_number("1e3 1/2"), None, "a whole number is digits");
        assert_eq!(parse_number("5\\"), None, "a backslash alone is not a percent");
        assert_eq!(parse_number("1/2/2020"), None);
        assert!(same_answer("\u{bd}", "0.5", 1e-6) && same_answer("\\frac{1}{2}", "\u{bd}", 1e-6));
        assert!(same_answer("50\\%", "50%", 1e-6));
        assert!(!same_answer("0.3333", "1/3", 1e-6), "as docs/objectives.md says");
        assert_eq!(parse_number("inf"), None);
        // As a typesetter or a CJK keyboard writes them.
        assert!(same_answer("\u{2212}5", "-5", 1e-6), "the minus sign");
        assert!(same_answer("\u{ff11}\u{ff12}", "12", 1e-6), "full-width digits");
        assert!(same_answer("cafe\u{301}", "caf\u{e9}", 1e-6), "decomposed accent");
    }

    #[test]
    fn text_compares_normalised() {
        assert!(same_answer(
            " Acute  Cholecystitis. ",
            "acute cholecystitis",
            1e-6
        ));
        assert!(same_answer("\\text{Yes}", "yes", 1e-6));
        assert!(same_answer("\"warfarin\"", "Warfarin", 1e-6));
        assert!(!same_answer("heparin", "warfarin", 1e-6));
        assert!(!same_answer("", "warfarin", 1e-6));
        assert!(!same_answer("", "", 1e-6), "a blank gold is no answer");
        assert!(!same_answer("  ", " ", 1e-6));
    }
}
