//! Reward presets: a named recipe — objectives with their weights, and the system prompt that
//! asks for the format they score — so a run config selects a paper's reward in one line
//! (`[reward] preset = "crpo"`). The crate that owns the objectives defines its presets and
//! registers them with [`crate::register_preset!`].

/// A named reward recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardPreset {
    /// The name configs use.
    pub name: &'static str,
    pub description: &'static str,
    /// (objective plugin, weight); weight 0 computes and logs an objective without summing it.
    pub objectives: &'static [(&'static str, f32)],
    /// The system message that asks for the objectives' format.
    pub system_prompt: &'static str,
}

impl RewardPreset {
    /// The reward as a formula, `10·accuracy + clinical_reasoning + 0.5·consistency`; weight-0
    /// objectives are left out.
    pub fn formula(&self) -> String {
        let terms: Vec<String> = self
            .objectives
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .map(|(name, w)| {
                if *w == 1.0 {
                    name.to_string()
                } else {
                    format!("{w}·{name}")
                }
            })
            .collect();
        terms.join(" + ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_names_the_summed_objectives() {
        let preset = RewardPreset {
            name: "p",
            description: "",
            objectives: &[
                ("accuracy", 10.0),
                ("format", 1.0),
                ("logged", 0.0),
                ("consistency", 0.5),
            ],
            system_prompt: "",
        };
        assert_eq!(preset.formula(), "10·accuracy + format + 0.5·consistency");
    }
}
