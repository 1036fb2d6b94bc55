//! Plugin options: the TOML table of a plugin in the run config, handed over as JSON.

use crate::error::PluginError;
use serde::de::DeserializeOwned;

/// The options of a plugin that takes none: `parse_options::<NoOptions>(options)` accepts an
/// empty table (or none) and refuses any key by name.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Parses a plugin's options into its own options struct (use `#[serde(deny_unknown_fields)]`
/// on it). The error names the offending option by its path, e.g. `budget` or `drugs[2].name`.
/// A missing table (`null`) parses as an empty one so that all-default options work.
/// A number beyond an `f32`'s range (±3.4e38) is refused by name: serde would read it into an
/// `f32` option as infinity, and no option needs one so large.
pub fn parse_options<T: DeserializeOwned>(options: &serde_json::Value) -> Result<T, PluginError> {
    let empty = serde_json::Value::Object(Default::default());
    let options = if options.is_null() { &empty } else { options };
    if !options.is_object() {
        // Else serde names the plugin's options struct ("expected struct NoOptions").
        return Err(PluginError::failed(format!(
            "options must be a table of option names (a JSON object or TOML table), not `{options}`"
        )));
    }
    if let Some((option, number)) = beyond_f32(options, String::new()) {
        return Err(PluginError::InvalidOption {
            option,
            message: format!("{number:e} is beyond the range an option can hold (±3.4e38)"),
        });
    }
    serde_path_to_error::deserialize(options).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // serde reports an unknown or missing key at the enclosing path: name the key itself.
        let option = quoted_key(&inner).unwrap_or(path);
        PluginError::InvalidOption {
            option,
            message: inner,
        }
    })
}

/// Whether `number` is finite and within an `f32`'s range (±3.4e38): a config number an `f32`
/// can hold as written.
pub fn fits_f32(number: f64) -> bool {
    number.is_finite() && number.abs() <= f32::MAX as f64
}

/// The first number in `value` too large for an `f32`, with its path (`drugs[2].dose`).
fn beyond_f32(value: &serde_json::Value, path: String) -> Option<(String, f64)> {
    use serde_json::Value;
    match value {
        Value::Number(number) => number.as_f64().filter(|n| !fits_f32(*n)).map(|n| (path, n)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| beyond_f32(item, format!("{path}[{i}]"))),
        Value::Object(entries) => entries.iter().find_map(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            beyond_f32(item, inner)
        }),
        _ => None,
    }
}

fn quoted_key(message: &str) -> Option<String> {
    let is_key_error = message.starts_with("unknown field") || message.starts_with("missing field");
    if !is_key_error {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct LengthOptions {
        budget: usize,
        #[serde(default)]
        penalty: f32,
    }

    #[test]
    fn options_that_are_not_a_table_are_refused_without_serde_s_type_names() {
        let error = parse_options::<LengthOptions>(&json!(5)).unwrap_err().to_string();
        assert!(
            error.contains("must be a table") && !error.contains("LengthOptions"),
            "{error}"
        );
    }

    #[test]
    fn parses_valid_options() {
        let parsed: LengthOptions = parse_options(&json!({"budget": 256})).unwrap();
        assert_eq!(
            parsed,
            LengthOptions {
                budget: 256,
                penalty: 0.0
            }
        );
    }

    #[test]
    fn unknown_option_is_named() {
        let err = parse_options::<LengthOptions>(&json!({"budjet": 256})).unwrap_err();
        match err {
            PluginError::InvalidOption { option, message } => {
                assert_eq!(option, "budjet");
                assert!(message.contains("unknown field"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ill_typed_option_is_named() {
        let err = parse_options::<LengthOptions>(&json!({"budget": "long"})).unwrap_err();
        assert!(matches!(err, PluginError::InvalidOption { ref option, .. } if option == "budget"));
    }

    #[test]
    fn a_number_an_f32_would_read_as_infinity_is_refused_by_its_path() {
        let err = parse_options::<LengthOptions>(&json!({"budget": 3, "penalty": 1e50})).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidOption { ref option, ref message } if option == "penalty" && message.contains("1e50")),
            "{err:?}"
        );
        let nested = beyond_f32(&json!({"drugs": [{"dose": 1.0}, {"dose": -4e38}]}), String::new());
        assert_eq!(nested, Some(("drugs[1].dose".to_string(), -4e38)));
        assert_eq!(
            beyond_f32(
                &json!({"budget": 9_000_000_000_000_000_000u64, "p": 3.4e38}),
                String::new()
            ),
            None
        );
    }

    #[test]
    fn missing_option_is_named() {
        let err = parse_options::<LengthOptions>(&serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, PluginError::InvalidOption { ref option, .. } if option == "budget"));
    }
}
