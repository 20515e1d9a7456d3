//! The one rule for text a client sends, applied wherever text is validated.
//!
//! - An identifier (a product id, an idempotency key, a customer id, a
//!   token's `sub`) holds no control characters (Cc: NUL...) and no format
//!   characters (Cf: zero-width spaces and joiners, direction overrides): two
//!   ids that look the same must be the same id.
//! - Free text (names, address lines, reasons) holds no control characters
//!   and no direction controls (U+202A..U+202E, U+2066..U+2069, which make
//!   text display in another order than it is stored); joiners stay allowed,
//!   emoji and several scripts need them. Required text needs at least one
//!   visible character: a zero-width space alone is not a name.
//!
//! NUL is a control character, so no text this rule accepts can make the
//! database refuse it as an invalid byte sequence.

/// What is wrong with an identifier, if anything.
pub fn id_problem(value: &str) -> Option<&'static str> {
    if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if value.chars().any(is_format) {
        Some("must not contain invisible or direction-changing characters")
    } else {
        None
    }
}

/// What is wrong with free text, if anything; `required` text needs a
/// visible character.
pub fn text_problem(value: &str, required: bool) -> Option<&'static str> {
    if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if value.chars().any(is_direction_control) {
        Some("must not contain direction-changing characters")
    } else if required && !value.chars().any(is_visible) {
        Some("must contain visible characters")
    } else {
        None
    }
}

/// A character that shows: not whitespace, control, format or another
/// default-ignorable character.
pub fn is_visible(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || is_format(c) || is_default_ignorable_filler(c))
}

/// Explicit direction embeddings, overrides and isolates.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Unicode general category Cf (format), as of Unicode 15.
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Characters that are not Cf but render as nothing: fillers, the combining
/// grapheme joiner, variation selectors.
fn is_default_ignorable_filler(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_control_and_format_characters() {
        assert_eq!(id_problem("sku-42"), None);
        assert_eq!(id_problem("café-ü"), None);
        for bad in ["a\u{0}b", "a\u{202E}b", "a\u{200B}", "\u{200D}x", "\u{FEFF}id"] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn required_text_needs_something_visible_and_no_direction_controls() {
        assert_eq!(text_problem("Ana María", true), None);
        assert_eq!(text_problem("👨\u{200D}👩\u{200D}👧 pack", true), None);
        assert_eq!(text_problem("", false), None);
        for bad in ["\u{200B}", "\u{200D}", " \u{3164} ", "\u{FE0F}"] {
            assert_eq!(
                text_problem(bad, true),
                Some("must contain visible characters"),
                "{bad:?}"
            );
        }
        assert!(text_problem("evil\u{202E}gnp.exe", false).is_some());
        assert!(text_problem("nul\u{0}", false).is_some());
    }
}
