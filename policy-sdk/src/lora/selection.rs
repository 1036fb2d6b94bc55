//! Which linear layers get an adapter, and each one's rank and scale, by PEFT's rules
//! (`peft.tuners.tuners_utils.check_target_module_exists`, `peft.utils.other.get_pattern_key`),
//! so an adapter PEFT made is placed and scaled in crpo exactly as PEFT places and scales it:
//!
//! - `target_modules`: a list (a module whose full name is in it, or ends with `.` + an entry)
//!   or a string: `"all-linear"` (every linear layer but the LM head) or a regular expression
//!   the full name must match entirely;
//! - `exclude_modules`: the same forms, taking layers out;
//! - `layers_to_transform` (with `layers_pattern`): only the decoder layers of these indices,
//!   applied to list targets that matched by suffix, as PEFT does;
//! - `rank_pattern` / `alpha_pattern`: the first key (in the file's order) that ends the name,
//!   as a regular expression after a `.`, gives that layer's rank / alpha.
//!
//! Module names are the model's (`model.layers.0.self_attn.q_proj`). PEFT's expressions are
//! Python's `re`; the common subset (no look-around or back-references) means the same in the
//! `regex` crate, and one outside it is refused by [`LoraConfig::validate`].

use super::{LoraConfig, MAX_RANK};
use crpo_sdk::{PluginError, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The name `target_modules` gives every linear layer but the LM head.
pub const ALL_LINEAR: &str = "all-linear";

/// Which linear layers get adapters (`target_modules`): names or a string (`"all-linear"` or a
/// regular expression over the full module name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a list of module names, or a string: \"all-linear\" or a regular expression over module names"
)]
pub enum TargetModules {
    Names(Vec<String>),
    Pattern(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::Pattern(ALL_LINEAR.into())
    }
}

/// Modules taken out (`exclude_modules`): names or a regular expression, matched as targets.
pub type ExcludedModules = TargetModules;

impl TargetModules {
    /// A module these targets select that crpo cannot adapt: PEFT adapts the embedding and a
    /// trained head too; crpo's adapters are on the decoder's linear layers.
    pub(super) fn unsupported(&self) -> Option<&'static str> {
        ["model.embed_tokens", "lm_head"]
            .into_iter()
            .find(|module| self.matches(module))
    }

    /// Whether `module` is listed (PEFT's suffix rule) or matches the expression entirely;
    /// `"all-linear"` is the caller's to read.
    pub(super) fn matches(&self, module: &str) -> bool {
        match self {
            TargetModules::Names(names) => names_match(names, module),
            TargetModules::Pattern(pattern) => full_match(pattern, module),
        }
    }
}

/// `layers_to_transform`: one decoder layer's index or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a decoder layer's index (a whole number from 0) or a list of them"
)]
pub enum LayerIndices {
    One(usize),
    Many(Vec<usize>),
}

impl LayerIndices {
    fn contains(&self, index: usize) -> bool {
        match self {
            LayerIndices::One(one) => *one == index,
            LayerIndices::Many(many) => many.contains(&index),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, LayerIndices::Many(many) if many.is_empty())
    }
}

/// `layers_pattern`: the name (or names) of the module list holding the decoder layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "expected the name of the module list holding the decoder layers (\"layers\") or a list of names"
)]
pub enum LayersPattern {
    One(String),
    Many(Vec<String>),
}

impl LayersPattern {
    fn names(&self) -> Vec<&str> {
        match self {
            LayersPattern::One(one) => vec![one.as_str()],
            LayersPattern::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// Python's `re.fullmatch(pattern, name)`.
fn full_match(pattern: &str, name: &str) -> bool {
    anchored(pattern).is_ok_and(|re| re.is_match(name))
}

fn anchored(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// PEFT's list rule: the full name, or a name ending with `.` + an entry.
fn names_match(names: &[String], module: &str) -> bool {
    names.iter().any(|name| {
        module == name
            || module
                .strip_suffix(name.as_str())
                .is_some_and(|head| head.ends_with('.'))
    })
}

/// `get_pattern_key`'s expression for a `rank_pattern` / `alpha_pattern` key.
fn pattern_key(key: &str) -> std::result::Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
}

/// The first key of `patterns` that ends `module`'s name.
fn first_matching<'a, T>(patterns: &'a indexmap::IndexMap<String, T>, module: &str) -> Option<&'a T> {
    patterns
        .iter()
        .find(|(key, _)| pattern_key(key).is_ok_and(|re| re.is_match(module)))
        .map(|(_, value)| value)
}

impl LoraConfig {
    /// Whether the linear layer named `module` (`model.layers.0.self_attn.q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        if self
            .exclude_modules
            .as_ref()
            .is_some_and(|excluded| excluded.matches(module))
        {
            return false;
        }
        match &self.target_modules {
            TargetModules::Pattern(all) if all == ALL_LINEAR => {
                module.rsplit('.').next() != Some("lm_head") && self.in_transformed_layer(module)
            }
            pattern @ TargetModules::Pattern(_) => pattern.matches(module),
            // A full name listed is taken whatever its layer (PEFT checks layers only for the rest).
            TargetModules::Names(names) if names.iter().any(|name| name == module) => true,
            names => names.matches(module) && self.in_transformed_layer(module),
        }
    }

    /// `layers_to_transform`: whether `module` sits in a decoder layer it names (always without it).
    fn in_transformed_layer(&self, module: &str) -> bool {
        let Some(indices) = self.layers_to_transform.as_ref().filter(|i| !i.is_empty()) else {
            return true;
        };
        // The first numbered component after the layer list (not a nested one, such as an expert's).
        let expressions: Vec<String> = match &self.layers_pattern {
            Some(pattern) if !pattern.names().iter().all(|name| name.is_empty()) => pattern
                .names()
                .iter()
                .map(|name| format!("^(?:.*?\\.)?{name}\\.(?P<idx>\\d+)\\."))
                .collect(),
            _ => vec!["^.*?\\.[^.]*\\.(?P<idx>\\d+)\\.".into()],
        };
        let index = expressions.iter().find_map(|expression| {
            Regex::new(expression)
                .ok()?
                .captures(module)?
                .name("idx")?
                .as_str()
                .parse::<usize>()
                .ok()
        });
        index.is_some_and(|index| indices.contains(index))
    }

    /// The `target_modules` names that select none of `adapted` (the layers that got
    /// adapters): a misspelt name beside good ones. A name `exclude_modules` takes out is not
    /// one (PEFT saves an adapter made with both as the full list, excluded names included).
    pub fn unmatched_target_names(&self, adapted: &[&str]) -> Vec<String> {
        let excluded = |name: &str| {
            self.exclude_modules
                .as_ref()
                .is_some_and(|excluded| excluded.matches(name))
        };
        match &self.target_modules {
            TargetModules::Names(names) => names
                .iter()
                .filter(|name| {
                    !excluded(name)
                        && !adapted
                            .iter()
                            .any(|module| names_match(std::slice::from_ref(name), module))
                })
                .cloned()
                .collect(),
            TargetModules::Pattern(_) => Vec::new(),
        }
    }

    /// The rank of `module`'s adapter: `rank_pattern`'s, else `r`.
    pub fn rank_for(&self, module: &str) -> usize {
        first_matching(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r)
    }

    /// `s` of `module`'s adapter: its alpha (`alpha_pattern`'s, else `lora_alpha`) over its rank
    /// (rsLoRA: over the rank's square root).
    pub fn scale_for(&self, module: &str) -> f64 {
        let alpha = first_matching(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha);
        let r = self.rank_for(module) as f64;
        alpha / if self.use_rslora { r.sqrt() } else { r }
    }

    /// Refuses selections PEFT would not understand or crpo cannot read: a regular expression
    /// outside the common subset, a rank of 0, an alpha that is no positive number.
    pub(super) fn validate_selection(&self) -> Result<()> {
        let expression = |key: &str, pattern: &str, compiled: std::result::Result<Regex, regex::Error>| {
            compiled.map(|_| ()).map_err(|e| {
                PluginError::invalid_option(
                    key,
                    format!("`{pattern}` is not a regular expression crpo reads (Python's re without look-around or back-references): {e}"),
                )
            })
        };
        match &self.target_modules {
            // A bare word matches only a top-level module of that name (never a decoder's
            // linear layer): a misspelt "all-linear" or a name meant as a list.
            TargetModules::Pattern(word)
                if word != ALL_LINEAR
                    && word.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') =>
            {
                return Err(PluginError::invalid_option(
                    "lora.target_modules",
                    format!(
                        "`{word}`: expected a list of module names ([\"{word}\"]), \"all-linear\", or a regular expression over full module names (`.*\\.q_proj`)"
                    ),
                ));
            }
            TargetModules::Pattern(pattern) if pattern != ALL_LINEAR => {
                expression("lora.target_modules", pattern, anchored(pattern))?
            }
            TargetModules::Names(names) if names.is_empty() => {
                return Err(PluginError::invalid_option(
                    "lora.target_modules",
                    "names no module",
                ))
            }
            _ => {}
        }
        // PEFT's own rules (LoraConfig.__post_init__): an adapter breaking them is one PEFT
        // refuses to load.
        if let TargetModules::Pattern(pattern) = &self.target_modules {
            for (key, given) in [
                ("lora.layers_to_transform", self.layers_to_transform.is_some()),
                ("lora.layers_pattern", self.layers_pattern.is_some()),
            ] {
                if given {
                    return Err(PluginError::invalid_option(
                        key,
                        format!("cannot be used when target_modules is a string (`{pattern}`), as in PEFT: list the modules instead (e.g. [\"q_proj\", \"v_proj\"])"),
                    ));
                }
            }
        }
        if self.layers_pattern.is_some() && self.layers_to_transform.is_none() {
            return Err(PluginError::invalid_option(
                "lora.layers_pattern",
                "needs layers_to_transform, as in PEFT (it names where the layer numbers are)",
            ));
        }
        if let Some(ExcludedModules::Pattern(pattern)) = &self.exclude_modules {
            expression("lora.exclude_modules", pattern, anchored(pattern))?;
        }
        for (key, rank) in &self.rank_pattern {
            expression("lora.rank_pattern", key, pattern_key(key))?;
            if *rank == 0 || *rank > MAX_RANK {
                return Err(PluginError::invalid_option(
                    "lora.rank_pattern",
                    format!("`{key}`: a rank must be from 1 to {MAX_RANK} (it is {rank})"),
                ));
            }
        }
        for (key, alpha) in &self.alpha_pattern {
            expression("lora.alpha_pattern", key, pattern_key(key))?;
            if !alpha.is_finite() || *alpha <= 0.0 {
                return Err(PluginError::invalid_option(
                    "lora.alpha_pattern",
                    format!("`{key}`: an alpha must be a number > 0"),
                ));
            }
        }
        if let Some(pattern) = &self.layers_pattern {
            for name in pattern.names() {
                let compiled = Regex::new(&format!("^(?:.*?\\.)?{name}\\.(?P<idx>\\d+)\\."));
                expression("lora.layers_pattern", name, compiled)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_config as config;
    use super::*;

    fn names(names: &[&str]) -> TargetModules {
        TargetModules::Names(names.iter().map(|n| n.to_string()).collect())
    }

    const Q0: &str = "model.layers.0.self_attn.q_proj";
    const Q1: &str = "model.layers.1.self_attn.q_proj";
    const UP1: &str = "model.layers.1.mlp.up_proj";

    #[test]
    fn list_targets_match_a_full_name_or_a_dotted_suffix() {
        let named = config(names(&["q_proj", "mlp.down_proj"]));
        assert!(named.targets(Q0));
        assert!(named.targets("model.layers.3.mlp.down_proj"));
        assert!(!named.targets("model.layers.3.self_attn.k_proj"));
        // A suffix must start at a component: `proj` is no module of these.
        assert!(!config(names(&["proj"])).targets(Q0));
        assert!(!config(names(&["_proj"])).targets(Q0));
        assert_eq!(
            named.unmatched_target_names(&[Q0]),
            vec!["mlp.down_proj".to_string()]
        );
        assert!(config(names(&[Q0])).targets(Q0));
        // Names exclude_modules takes out adapt nothing by design: no warning for them.
        let with_excluded = LoraConfig {
            exclude_modules: Some(ExcludedModules::Names(vec!["down_proj".into()])),
            ..config(names(&[Q0, "model.layers.0.mlp.down_proj"]))
        };
        assert!(with_excluded.unmatched_target_names(&[Q0]).is_empty());
        let all = config(TargetModules::default());
        assert!(all.targets(UP1) && !all.targets("lm_head"));
    }

    #[test]
    fn a_string_target_is_a_regular_expression_over_the_whole_name() {
        let pattern = config(TargetModules::Pattern(r".*\.(q_proj|up_proj)".into()));
        assert!(pattern.targets(Q0) && pattern.targets(UP1));
        assert!(!pattern.targets("model.layers.1.mlp.down_proj"));
        // Entirely: `.*q_pro` matches no full name; a bare word is refused as a likely slip.
        assert!(!config(TargetModules::Pattern(".*q_pro".into())).targets(Q0));
        let word = config(TargetModules::Pattern("q_proj".into()))
            .validate()
            .unwrap_err();
        assert!(word.to_string().contains("[\"q_proj\"]"), "{word}");
        assert!(config(TargetModules::Pattern(".*q_pro".into()))
            .validate()
            .is_ok());
        let broken = config(TargetModules::Pattern("(?<=x)q".into()));
        assert!(broken
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lora.target_modules"));
    }

    #[test]
    fn excluded_modules_and_layer_indices_narrow_the_targets() {
        let narrowed = LoraConfig {
            layers_to_transform: Some(LayerIndices::Many(vec![1])),
            exclude_modules: Some(ExcludedModules::Names(vec![UP1.into()])),
            ..config(names(&["self_attn.q_proj", "up_proj"]))
        };
        assert!(!narrowed.targets(Q0), "layer 0 is not transformed");
        assert!(narrowed.targets(Q1));
        assert!(!narrowed.targets(UP1), "excluded");
        let one = LoraConfig {
            layers_to_transform: Some(LayerIndices::One(0)),
            layers_pattern: Some(LayersPattern::One("layers".into())),
            ..config(TargetModules::default())
        };
        assert!(one.targets(Q0) && !one.targets(Q1));
        // A regular expression's targets ignore layer indices, as PEFT's do.
        let pattern = LoraConfig {
            layers_to_transform: Some(LayerIndices::One(0)),
            ..config(TargetModules::Pattern(r".*q_proj".into()))
        };
        assert!(pattern.targets(Q1));
        let excluded = LoraConfig {
            exclude_modules: Some(ExcludedModules::Pattern(r".*\.1\..*".into())),
            ..config(TargetModules::default())
        };
        assert!(excluded.targets(Q0) && !excluded.targets(Q1));
    }

    #[test]
    fn combinations_peft_refuses_are_refused_by_key() {
        let refused = |lora: LoraConfig, key: &str| {
            let error = lora.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        };
        // PEFT: "`layers_to_transform` cannot be used when `target_modules` is a str".
        refused(
            LoraConfig {
                layers_to_transform: Some(LayerIndices::One(0)),
                ..config(TargetModules::Pattern(ALL_LINEAR.into()))
            },
            "lora.layers_to_transform",
        );
        refused(
            LoraConfig {
                layers_pattern: Some(LayersPattern::One("layers".into())),
                ..config(TargetModules::Pattern(r".*q_proj".into()))
            },
            "lora.layers_pattern",
        );
        refused(
            LoraConfig {
                layers_pattern: Some(LayersPattern::One("layers".into())),
                ..config(names(&["q_proj"]))
            },
            "needs layers_to_transform",
        );
        refused(
            LoraConfig {
                r: MAX_RANK + 1,
                ..config(names(&["q_proj"]))
            },
            "lora.r",
        );
        let listed = LoraConfig {
            layers_to_transform: Some(LayerIndices::One(0)),
            layers_pattern: Some(LayersPattern::One("layers".into())),
            ..config(names(&["q_proj"]))
        };
        assert!(listed.validate().is_ok());
    }

    #[test]
    fn rank_and_alpha_patterns_take_the_first_key_that_ends_the_name() {
        let mut patterned = config(TargetModules::default());
        patterned.rank_pattern.insert("up_proj".into(), 2);
        patterned
            .rank_pattern
            .insert(r"layers\.1\.mlp\.up_proj".into(), 16);
        patterned.alpha_pattern.insert("q_proj".into(), 3.0);
        assert_eq!(patterned.rank_for(UP1), 2, "the first key in order wins");
        assert_eq!(patterned.rank_for(Q0), 4);
        assert_eq!(patterned.scale_for(UP1), 8.0 / 2.0);
        assert_eq!(patterned.scale_for(Q0), 3.0 / 4.0);
        // A key must end the name at a component.
        assert_eq!(patterned.rank_for("model.layers.1.mlp.xup_proj"), 4);
        let rs = LoraConfig {
            use_rslora: true,
            ..patterned.clone()
        };
        assert_eq!(rs.scale_for(UP1), 8.0 / 2f64.sqrt());
        patterned.rank_pattern.insert("down_proj".into(), 0);
        assert!(patterned
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lora.rank_pattern"));
    }
}
