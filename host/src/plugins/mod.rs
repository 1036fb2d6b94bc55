//! The plugin runtime: built-in plugins (inventory) and libraries from `--plugins DIR`
//! (abi_stable), seen through the same sdk traits.

pub mod dataset_read;
pub mod isolation;
pub mod loader;
mod objective;
mod slow_call;
pub mod trust;

pub use objective::{ConfiguredObjective, ObjectiveSpec};

use crpo_policy_sdk::registry::builtin_policies;
use crpo_policy_sdk::PolicyPlugin;
use crpo_sdk::registry::{builtin_plugins, BuiltinPlugin};
use crpo_sdk::{DatasetPlugin, PluginInfo, RewardPlugin, RewardPreset};
use std::fmt;
use std::path::{Path, PathBuf};
use trust::Trust;

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    /// `library`: the crate's name and version; `sdk`: the crpo-sdk version it was built against.
    Library {
        path: PathBuf,
        library: String,
        sdk: String,
    },
}

impl Origin {
    /// Whether this is a library built against a crpo-sdk older than `major.minor`.
    pub fn built_before(&self, major: u64, minor: u64) -> bool {
        let Origin::Library { sdk, .. } = self else {
            return false;
        };
        let mut parts = sdk.split('.').map(|part| part.parse::<u64>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        version < (major, minor)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("builtin"),
            Origin::Library { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    #[error("plugin directory {}: {error}", dir.display())]
    Directory { dir: PathBuf, error: std::io::Error },
    #[error("plugin library {}: {reason}", path.display())]
    Library { path: PathBuf, reason: String },
    /// A plugin directory unsafe to load from (crate::plugins::trust).
    #[error("plugin directory {}: {reason}", dir.display())]
    UnsafeDirectory { dir: PathBuf, reason: String },
    #[error("two {kind} plugins are named `{name}`: one from {first}, one from {second}")]
    DuplicateName {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "no {kind} plugin named `{name}`{}; available: {available}",
        did_you_mean(name, available)
    )]
    Unknown {
        kind: &'static str,
        name: String,
        available: String,
    },
}

/// A plugin of one kind with its info (read once) and origin. Built-ins are `'static`;
/// loaded ones are owned (their library stays loaded for the life of the process).
pub struct Registered<T: ?Sized + 'static> {
    pub info: PluginInfo,
    pub origin: Origin,
    plugin: PluginRef<T>,
}

enum PluginRef<T: ?Sized + 'static> {
    Static(&'static T),
    Owned(Box<T>),
}

impl<T: ?Sized> Registered<T> {
    pub fn plugin(&self) -> &T {
        match &self.plugin {
            PluginRef::Static(p) => p,
            PluginRef::Owned(p) => p,
        }
    }
}

impl<T: ?Sized> Registered<T> {
    pub(crate) fn owned(info: PluginInfo, plugin: Box<T>, origin: Origin) -> Self {
        Registered {
            info,
            origin,
            plugin: PluginRef::Owned(plugin),
        }
    }
}

/// Every plugin this run can use.
pub struct PluginRegistry {
    rewards: Vec<Registered<dyn RewardPlugin>>,
    datasets: Vec<Registered<dyn DatasetPlugin>>,
    policies: Vec<Registered<dyn PolicyPlugin>>,
    /// Reward presets of the built-in crates.
    presets: Vec<&'static RewardPreset>,
    /// The plugin directories and trust it was loaded with (a reward worker loads the same).
    dirs: Vec<PathBuf>,
    trust: Trust,
}

impl PluginRegistry {
    /// The built-ins plus every library in each of `dirs`, under the default trust (no pins;
    /// files and directories others can write to refused).
    pub fn load(dirs: &[PathBuf]) -> Result<Self, PluginLoadError> {
        Self::load_trusted(dirs, &Trust::default())
    }

    /// The built-ins plus every library in each of `dirs` (each directory once) that `trust`
    /// admits; checked before a library is opened, so a refused one runs no code.
    pub fn load_trusted(dirs: &[PathBuf], trust: &Trust) -> Result<Self, PluginLoadError> {
        Self::load_each(dirs, trust, Err)
    }

    /// For `crpo-host plugins`, the command that diagnoses: under the default trust, the
    /// built-ins and every library that loads, with what kept each of the others out (one
    /// bad library stopped the listing).
    pub fn load_what_loads(dirs: &[PathBuf]) -> (Self, Vec<PluginLoadError>) {
        let mut problems = Vec::new();
        let registry = Self::load_each(dirs, &Trust::default(), |problem| {
            problems.push(problem);
            Ok(())
        });
        // Every problem went to the list, so the load itself cannot fail.
        (
            registry.unwrap_or_else(|_| PluginRegistry::builtin_only()),
            problems,
        )
    }

    /// As [`Self::load_trusted`]; a directory or library that cannot be read, is not trusted
    /// or does not load goes to `problem`, which stops the load by returning it or passes it
    /// over (that directory's, or that library's, plugins left out).
    fn load_each(
        dirs: &[PathBuf],
        trust: &Trust,
        mut problem: impl FnMut(PluginLoadError) -> Result<(), PluginLoadError>,
    ) -> Result<Self, PluginLoadError> {
        let mut registry = PluginRegistry::builtin_only();
        registry.dirs = trust::distinct_dirs(dirs);
        registry.trust = trust.clone();
        let mut seen = std::collections::BTreeSet::new();
        for dir in registry.dirs.clone() {
            let libraries = match loader::library_files(&dir) {
                Ok(libraries) => libraries,
                Err(error) => {
                    problem(error)?;
                    continue;
                }
            };
            if !libraries.is_empty() {
                if let Err(error) = trust.check_directory(&dir) {
                    problem(error)?;
                    continue;
                }
            }
            for path in libraries {
                match trust
                    .check_library(&dir, &path)
                    .and_then(|()| registry.add_library(&path))
                {
                    Ok(()) => {
                        seen.insert(path.file_name().map(|n| n.to_string_lossy().into_owned()));
                    }
                    Err(error) => problem(error)?,
                }
            }
        }
        for pin in &trust.pins {
            if !seen.contains(&Some(pin.file.clone())) {
                tracing::warn!(
                    "run.plugin_pins pins {}, which no plugin directory holds (a misspelt name, or a library not installed)",
                    pin.file
                );
            }
        }
        Ok(registry)
    }

    pub fn builtin_only() -> Self {
        let mut rewards = Vec::new();
        let mut datasets = Vec::new();
        let mut policies = Vec::new();
        let mut presets = Vec::new();
        for builtin in builtin_plugins() {
            match builtin {
                BuiltinPlugin::Reward(p) => rewards.push(Registered {
                    info: p.info(),
                    origin: Origin::Builtin,
                    plugin: PluginRef::Static(*p),
                }),
                BuiltinPlugin::Dataset(p) => datasets.push(Registered {
                    info: p.info(),
                    origin: Origin::Builtin,
                    plugin: PluginRef::Static(*p),
                }),
                BuiltinPlugin::Preset(p) => presets.push(*p),
            }
        }
        for p in builtin_policies() {
            policies.push(Registered {
                info: p.info(),
                origin: Origin::Builtin,
                plugin: PluginRef::Static(p),
            });
        }
        presets.sort_by_key(|p| p.name);
        PluginRegistry {
            rewards,
            datasets,
            policies,
            presets,
            dirs: Vec::new(),
            trust: Trust::default(),
        }
    }

    /// Loads one library and adds its plugins, refusing a name that is already taken.
    pub fn add_library(&mut self, path: &Path) -> Result<(), PluginLoadError> {
        let library = loader::load_library(path)?;
        for reward in library.rewards {
            push_unique(&mut self.rewards, reward, "reward")?;
        }
        for dataset in library.datasets {
            push_unique(&mut self.datasets, dataset, "dataset")?;
        }
        for policy in library.policies {
            push_unique(&mut self.policies, policy, "policy")?;
        }
        Ok(())
    }

    /// The plugin directories (each once) and the trust the registry was loaded with.
    pub fn sources(&self) -> (&[PathBuf], &Trust) {
        (&self.dirs, &self.trust)
    }

    pub fn rewards(&self) -> &[Registered<dyn RewardPlugin>] {
        &self.rewards
    }

    pub fn datasets(&self) -> &[Registered<dyn DatasetPlugin>] {
        &self.datasets
    }

    pub fn policies(&self) -> &[Registered<dyn PolicyPlugin>] {
        &self.policies
    }

    pub fn policy(&self, name: &str) -> Result<&Registered<dyn PolicyPlugin>, PluginLoadError> {
        find(&self.policies, name, "policy")
    }

    pub fn reward(&self, name: &str) -> Result<&Registered<dyn RewardPlugin>, PluginLoadError> {
        find(&self.rewards, name, "reward")
    }

    pub fn dataset(&self, name: &str) -> Result<&Registered<dyn DatasetPlugin>, PluginLoadError> {
        find(&self.datasets, name, "dataset")
    }

    pub fn presets(&self) -> &[&'static RewardPreset] {
        &self.presets
    }

    pub fn preset(&self, name: &str) -> Result<&'static RewardPreset, PluginLoadError> {
        self.presets
            .iter()
            .copied()
            .find(|p| p.name == name)
            .ok_or_else(|| PluginLoadError::Unknown {
                kind: "reward preset",
                name: name.to_string(),
                available: self.presets.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            })
    }
}

/// ` (did you mean `x`?)` when one of the comma-separated `available` names is close to
/// `name` (a typo), else nothing.
fn did_you_mean(name: &str, available: &str) -> String {
    available
        .split(", ")
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(similarity, _)| *similarity >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

fn push_unique<T: ?Sized>(
    list: &mut Vec<Registered<T>>,
    plugin: Registered<T>,
    kind: &'static str,
) -> Result<(), PluginLoadError> {
    if let Some(existing) = list.iter().find(|p| p.info.name == plugin.info.name) {
        return Err(PluginLoadError::DuplicateName {
            kind,
            name: plugin.info.name.clone(),
            first: existing.origin.to_string(),
            second: plugin.origin.to_string(),
        });
    }
    list.push(plugin);
    Ok(())
}

fn find<'a, T: ?Sized>(
    list: &'a [Registered<T>],
    name: &str,
    kind: &'static str,
) -> Result<&'a Registered<T>, PluginLoadError> {
    list.iter()
        .find(|p| p.info.name == name)
        .ok_or_else(|| PluginLoadError::Unknown {
            kind,
            name: name.to_string(),
            available: list
                .iter()
                .map(|p| p.info.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::Origin;

    #[test]
    fn a_library_s_sdk_version_is_compared_by_number() {
        let library = |sdk: &str| Origin::Library {
            path: "lib.so".into(),
            library: "x 0.1.0".into(),
            sdk: sdk.into(),
        };
        assert!(library("1.3.0").built_before(1, 4));
        assert!(!library("1.4.0").built_before(1, 4));
        assert!(!library("1.10.0").built_before(1, 4), "10 > 4 as numbers");
        assert!(library("0.9.1").built_before(1, 4));
        assert!(!Origin::Builtin.built_before(1, 4), "built-ins are current");
    }

    #[test]
    fn an_unknown_plugin_name_suggests_a_close_one() {
        let available = "accuracy, clinical_reasoning, consistency, faithfulness";
        assert_eq!(
            super::did_you_mean("acuracy", available),
            " (did you mean `accuracy`?)"
        );
        assert_eq!(
            super::did_you_mean("clinical_reasonning", available),
            " (did you mean `clinical_reasoning`?)"
        );
        assert_eq!(super::did_you_mean("option_coverage", available), "");
        assert_eq!(super::did_you_mean("x", ""), "");
    }
}
