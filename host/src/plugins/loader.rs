//! Finding and loading plugin libraries from `--plugins DIR` with abi_stable.

use super::{Origin, PluginLoadError as LoadError, Registered};
use abi_stable::abi_stability::abi_checking::{check_layout_compatibility_with_globals, CheckingGlobals};
use abi_stable::library::LibHeader;
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::StableAbi;
use crpo_policy_sdk::ffi::ForeignPolicyPlugin;
use crpo_policy_sdk::{PolicyPlugin, BUILT_TORCH_VERSION, TCH_SERIES};
use crpo_sdk::ffi::{FfiPolicyPluginBox, ForeignDatasetPlugin, ForeignRewardPlugin, PluginLibraryRef};
use crpo_sdk::{DatasetPlugin, RewardPlugin};
use std::path::{Path, PathBuf};

/// The plugins one library provides.
pub struct LoadedLibrary {
    pub rewards: Vec<Registered<dyn RewardPlugin>>,
    pub datasets: Vec<Registered<dyn DatasetPlugin>>,
    pub policies: Vec<Registered<dyn PolicyPlugin>>,
}

/// Policy plugins exchange libtorch tensor handles, which is only sound between builds
/// against the same torch and tch: anything else is refused before a tensor crosses.
pub fn check_policy_build(torch_version: &str, tch_series: &str) -> Result<(), String> {
    if torch_version == BUILT_TORCH_VERSION && tch_series == TCH_SERIES {
        return Ok(());
    }
    let theirs = if torch_version.is_empty() {
        "no torch (built with crpo_sdk::export_plugin_library!, not crpo_policy_sdk's)".to_string()
    } else {
        format!("torch {torch_version} with tch {tch_series}")
    };
    Err(format!(
        "its policy plugins were built against {theirs}, but this host runs torch {BUILT_TORCH_VERSION} with tch \
         {TCH_SERIES}; tensors can only cross between identical builds: rebuild the plugin against torch \
         {BUILT_TORCH_VERSION} and tch {TCH_SERIES}"
    ))
}

/// Dynamic libraries in `dir`, sorted so loading order (and so error order) is stable.
/// Other files (READMEs, licences) are left alone.
pub fn library_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|error| LoadError::Directory {
        dir: dir.to_path_buf(),
        error,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| LoadError::Directory {
                dir: dir.to_path_buf(),
                error,
            })?
            .path();
        let is_library = path.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION);
        if !is_library {
            continue;
        }
        // `metadata` follows links: a link to a file is listed here and judged by the trust
        // checks. Anything else named like a library is refused, not skipped in silence.
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => files.push(path),
            Ok(metadata) => {
                return Err(LoadError::Library {
                    path,
                    reason: format!(
                        "named like a plugin library but {}: remove or rename it",
                        if metadata.is_dir() {
                            "a directory"
                        } else {
                            "not a regular file (a device, pipe or socket)"
                        }
                    ),
                })
            }
            Err(error) => {
                return Err(LoadError::Library {
                    path,
                    reason: format!(
                    "named like a plugin library but unreadable ({error}): a broken link? remove or fix it"
                ),
                })
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Checks that `path` is a shared library whose every loaded segment lies within the file:
/// dlopen maps a cut-short copy (an interrupted download or `cp`) without complaint, and the
/// process then dies of SIGBUS when it touches the missing pages.
fn check_whole_library(path: &Path) -> Result<(), String> {
    use object::{Object, ObjectSegment};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let file = object::File::parse(&*bytes).map_err(|e| {
        format!("not a loadable library ({e}): a cut-short copy, or not a shared library at all")
    })?;
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > bytes.len() as u64 {
            return Err(format!(
                "the file is cut short: it has {} bytes, its segments need {} (copy it again)",
                bytes.len(),
                offset.saturating_add(size)
            ));
        }
    }
    Ok(())
}

/// Loads one library: checks it is a crpo plugin library of a compatible sdk version and type
/// layout, then asks it for its plugins. Libraries are never unloaded (abi_stable leaks them).
pub fn load_library(path: &Path) -> Result<LoadedLibrary, LoadError> {
    let fail = |reason: String| LoadError::Library {
        path: path.to_path_buf(),
        reason,
    };
    check_whole_library(path).map_err(fail)?;
    let header = lib_header_from_path(path).map_err(|e| fail(describe(e)))?;
    let sdk = header.version_strings().version.to_string();
    let root = init_root_module(header).map_err(|e| fail(describe(e)))?;
    let origin = Origin::Library {
        path: path.to_path_buf(),
        library: format!("{} {}", root.library_name(), root.library_version()),
        sdk,
    };
    let rewards = (root.reward_plugins())()
        .into_result()
        .map_err(|e| fail(e.into()))?
        .into_iter()
        .map(|p| {
            let plugin = ForeignRewardPlugin(p);
            Registered::owned(
                plugin.info(),
                Box::new(plugin) as Box<dyn RewardPlugin>,
                origin.clone(),
            )
        })
        .collect();
    let datasets = (root.dataset_plugins())()
        .into_result()
        .map_err(|e| fail(e.into()))?
        .into_iter()
        .map(|p| {
            let plugin = ForeignDatasetPlugin(p);
            Registered::owned(
                plugin.info(),
                Box::new(plugin) as Box<dyn DatasetPlugin>,
                origin.clone(),
            )
        })
        .collect();
    let policies: Vec<FfiPolicyPluginBox> = (root.policy_plugins())()
        .into_result()
        .map_err(|e| fail(e.into()))?
        .into_iter()
        .collect();
    if !policies.is_empty() {
        check_policy_build(root.torch_version().as_str(), root.tch_series().as_str()).map_err(fail)?;
    }
    let policies = policies
        .into_iter()
        .map(|p| {
            let plugin = ForeignPolicyPlugin(p);
            Registered::owned(
                plugin.info(),
                Box::new(plugin) as Box<dyn PolicyPlugin>,
                origin.clone(),
            )
        })
        .collect();
    let library = LoadedLibrary {
        rewards,
        datasets,
        policies,
    };
    for info in library.infos() {
        check_info(info).map_err(fail)?;
    }
    Ok(library)
}

impl LoadedLibrary {
    fn infos(&self) -> impl Iterator<Item = &crpo_sdk::PluginInfo> {
        let rewards = self.rewards.iter().map(|p| &p.info);
        let datasets = self.datasets.iter().map(|p| &p.info);
        rewards
            .chain(datasets)
            .chain(self.policies.iter().map(|p| &p.info))
    }
}

/// What a plugin says of itself: the sdk names a plugin whose `info()` panicked so (the
/// panic's message as its description); configs could not name it.
fn check_info(info: &crpo_sdk::PluginInfo) -> Result<(), String> {
    if info.name == crpo_sdk::ffi::INFO_PANICKED {
        return Err(format!(
            "a plugin's info() panicked: {}",
            crate::control_chars::visible(&info.description)
        ));
    }
    check_name(&info.name)
}

/// A plugin's name is what configs write: it must be one word a TOML string can hold and a
/// terminal shows as it is.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a plugin's info() gives an empty name: configs could not name it".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "plugin `{}`'s name holds {}: a name must be one word without control characters",
            crate::control_chars::visible(name),
            if c.is_control() {
                format!("the control character U+{:04X}", u32::from(c))
            } else {
                "whitespace".to_string()
            }
        ));
    }
    Ok(())
}

/// The library's root module, its types checked against the host's. abi_stable's own check
/// lets a library be a newer minor version than its loader (its vtables may have more
/// methods); a library of an older minor version — the host's vtables have methods added
/// after their `last_prefix_field` since — is checked the other way round: its types must be
/// a prefix of the host's. The host then reads the methods the library lacks as absent, and
/// the sdk's trait defaults stand in for them (`#[sabi(missing_field)]`, sabi_trait's default
/// fallback). Any other difference is refused.
fn init_root_module(header: &LibHeader) -> Result<PluginLibraryRef, LibraryError> {
    match header.init_root_module::<PluginLibraryRef>() {
        Err(LibraryError::AbiInstability(error)) => {
            let Some(library_layout) = header.layout() else {
                return Err(LibraryError::AbiInstability(error));
            };
            // Checked apart from abi_stable's process-wide record of prefix types, which keeps
            // the newest layout of each: an older library's is checked against it, not merged in.
            let apart = CheckingGlobals::new();
            let reversed = check_layout_compatibility_with_globals(
                library_layout,
                <PluginLibraryRef as StableAbi>::LAYOUT,
                &apart,
            );
            if reversed.is_err() {
                return Err(LibraryError::AbiInstability(error));
            }
            // SAFETY: the library's types were just checked to be a prefix of the host's: every
            // field the library has is laid out as the host expects, and the host reaches the
            // fields it lacks only through accessors that check the vtable's own length.
            unsafe { header.init_root_module_with_unchecked_layout::<PluginLibraryRef>() }
        }
        other => other,
    }
}

/// abi_stable's errors, in the plugin user's terms.
fn describe(error: LibraryError) -> String {
    let host = crpo_sdk::SDK_VERSION;
    let host_major = host.split('.').next().unwrap_or(host);
    match error {
        LibraryError::OpenError { err, .. } => format!("not a loadable library: {err}"),
        LibraryError::GetSymbolError { .. } => "not a crpo plugin library (it exports no crpo root module; \
             did the crate call crpo_sdk::export_plugin_library!?)"
            .to_string(),
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "built against crpo-sdk {actual_version}, but this host loads plugins built \
             against crpo-sdk {host_major}.x (it has {host}); rebuild the plugin with \
             crpo-sdk = \"{host_major}\""
        ),
        LibraryError::AbiInstability(errors) => format!(
            "its types do not match this host's crpo-sdk (an incompatible build of the sdk):\n{errors}"
        ),
        LibraryError::InvalidAbiHeader(header) => {
            format!("built with an incompatible abi_stable ({header:?})")
        }
        LibraryError::RootModule { err, .. } => format!("its root module failed: {err}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_libraries_must_match_this_build() {
        assert!(check_policy_build(BUILT_TORCH_VERSION, TCH_SERIES).is_ok());
        let err = check_policy_build("2.10.0+cu128", TCH_SERIES).unwrap_err();
        assert!(
            err.contains("torch 2.10.0+cu128") && err.contains(BUILT_TORCH_VERSION),
            "{err}"
        );
        assert!(check_policy_build(BUILT_TORCH_VERSION, "0.23")
            .unwrap_err()
            .contains("tch 0.23"));
        assert!(check_policy_build("", "")
            .unwrap_err()
            .contains("not crpo_policy_sdk's"));
    }

    #[test]
    fn a_plugin_name_must_be_one_visible_word() {
        assert!(check_name("option_coverage").is_ok() && check_name("med-qa.v2").is_ok());
        assert!(check_name("").unwrap_err().contains("empty name"));
        assert!(check_name("two words").unwrap_err().contains("whitespace"));
        let error = check_name("red\u{1b}[31m").unwrap_err();
        assert!(error.contains("U+001B") && !error.contains('\u{1b}'), "{error}");
        let panicked = crpo_sdk::PluginInfo {
            name: crpo_sdk::ffi::INFO_PANICKED.into(),
            version: String::new(),
            description: "panicked at src/lib.rs:9: no".into(),
        };
        assert!(check_info(&panicked)
            .unwrap_err()
            .contains("info() panicked: panicked at src/lib.rs:9"));
    }
}
