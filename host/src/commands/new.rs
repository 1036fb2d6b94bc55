//! `crpo-host new reward NAME` / `new dataset NAME`: a ready plugin crate — Cargo.toml on the
//! sdk, a working rule or reader, its test, a README with the commands that build and load it.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct NewArgs {
    /// What to write: `reward` (an objective in one function) or `dataset` (a reader).
    pub kind: PluginKind,
    /// The crate's name (letters, digits, `-`, `_`); the plugin is named after it with `_`.
    pub name: String,
    /// The directory to create (default: ./NAME). It must not exist.
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub dir: Option<PathBuf>,
    /// The crpo-sdk source directory to depend on (default: the one this host was built from).
    #[arg(long, conflicts_with = "sdk_git", value_parser = crate::home_path::path_argument)]
    pub sdk: Option<PathBuf>,
    /// Depend on crpo-sdk from this git repository instead.
    #[arg(long, value_name = "URL")]
    pub sdk_git: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    Reward,
    Dataset,
}

struct Template {
    cargo_toml: &'static str,
    lib: &'static str,
    test: &'static str,
    readme: &'static str,
}

const REWARD: Template = Template {
    cargo_toml: include_str!("../../templates/reward/Cargo.toml"),
    lib: include_str!("../../templates/reward/lib.rs"),
    test: include_str!("../../templates/reward/test.rs"),
    readme: include_str!("../../templates/reward/README.md"),
};

const DATASET: Template = Template {
    cargo_toml: include_str!("../../templates/dataset/Cargo.toml"),
    lib: include_str!("../../templates/dataset/lib.rs"),
    test: include_str!("../../templates/dataset/test.rs"),
    readme: include_str!("../../templates/dataset/README.md"),
};

/// Each lower-case name a template's `use` lines bring into scope, with the line's path
/// (`reasoning`, `crpo_sdk::rules`).
fn imported_names(template: &Template) -> impl Iterator<Item = (&'static str, &'static str)> {
    [template.lib, template.test]
        .into_iter()
        .flat_map(str::lines)
        .filter_map(|line| line.strip_prefix("use ")?.trim_end_matches(';').rsplit_once("::"))
        .flat_map(|(path, names)| {
            names
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .map(str::trim)
                .filter(|name| name.starts_with(|c: char| c.is_ascii_lowercase()))
                .map(move |name| (name, path))
        })
}

/// The sdk source this binary was built from, if it is still there.
fn built_sdk() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    dir.join("Cargo.toml")
        .exists()
        .then(|| dir.canonicalize().ok())
        .flatten()
}

/// Names a plugin crate cannot take: Rust's keywords (the name is also a function's) and the
/// crates every Rust program already has.
const RESERVED: [&str; 57] = [
    "as",
    "break",
    "const",
    "continue",
    "crate",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "union",
];

/// The plugin of this kind named `ident` that the new one would clash with when loaded
/// beside it, if any: a built-in, or one of the plugin directories' (when they load).
fn taken_by(kind: PluginKind, ident: &str, plugin_dirs: &[PathBuf]) -> Option<String> {
    let registry = crate::plugins::PluginRegistry::load(plugin_dirs)
        .unwrap_or_else(|_| crate::plugins::PluginRegistry::builtin_only());
    let origin = match kind {
        PluginKind::Reward => registry
            .rewards()
            .iter()
            .find(|p| p.info.name == ident)
            .map(|p| p.origin.to_string()),
        PluginKind::Dataset => registry
            .datasets()
            .iter()
            .find(|p| p.info.name == ident)
            .map(|p| p.origin.to_string()),
    }?;
    let kind = match kind {
        PluginKind::Reward => "reward objective",
        PluginKind::Dataset => "dataset reader",
    };
    Some(if origin == "builtin" {
        format!("crpo's built-in {kind} `{ident}`")
    } else {
        format!("the {kind} `{ident}` of {origin}")
    })
}

pub fn run(plugin_dirs: &[PathBuf], args: &NewArgs) -> anyhow::Result<()> {
    let ident = args.name.replace('-', "_");
    let valid = ident.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "`{}` is not a usable crate name: use lower-case letters, digits, `-` and `_`, starting with a letter",
            args.name
        );
    }
    // The name becomes a crate and a function: Rust's keywords and the standard crates cannot
    // be either, and crpo's own crates would depend on themselves.
    // The crates the template depends on (and the sdk's own ABI crate) cannot be its name.
    let dependency = ["serde", "serde_json", "abi_stable"].contains(&ident.as_str());
    let crpo_crate = dependency
        || ["crpo_sdk", "crpo_policy_sdk", "crpo_host"].contains(&ident.as_str())
        || ident.starts_with("crpo_plugins")
        || ident.starts_with("crpo_torch");
    if RESERVED.contains(&ident.as_str()) || crpo_crate {
        bail!(
            "`{}` is a name Rust or crpo already uses (a keyword, a standard crate, a crate the plugin depends on or crpo's own): choose another (nothing was written)",
            args.name
        );
    }
    if args.kind == PluginKind::Reward {
        // The name is the objective's function, beside the rules the template imports.
        if let Some(import) = imported_names(&REWARD).find(|(name, _)| *name == ident) {
            bail!(
                "`{ident}` is a name the template imports ({}): the objective's function would clash with it; choose another (nothing was written)",
                import.1
            );
        }
    }
    if let Some(taken) = taken_by(args.kind, &ident, plugin_dirs) {
        bail!(
            "`{ident}` is the name of {taken}: a plugin of that name would clash with it when loaded; choose another (nothing was written)"
        );
    }
    let sdk = match (&args.sdk, &args.sdk_git) {
        (_, Some(url)) => format!("{{ git = {} }}", toml_string(url)),
        (Some(dir), None) => sdk_path_dependency(dir)?,
        (None, None) => match built_sdk() {
            Some(dir) => sdk_path_dependency(&dir)?,
            None => bail!(
                "this crpo-host was built elsewhere: say where crpo-sdk is with --sdk PATH (the sdk/ directory of a crpo checkout) or --sdk-git URL"
            ),
        },
    };
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!(
            "{} already exists: choose another --dir or name (nothing was written)",
            dir.display()
        );
    }
    let template = match args.kind {
        PluginKind::Reward => REWARD,
        PluginKind::Dataset => DATASET,
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{ident}}", &ident)
            .replace("{{sdk}}", &sdk)
    };
    // Written in a sibling temporary directory and renamed: a failure leaves nothing half-made.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".crpo-new-")
        .tempdir_in(&parent)
        .map_err(|error| crate::atomic_file::cannot_create_in(&parent, &error))?;
    let files = [
        ("Cargo.toml".to_string(), fill(template.cargo_toml)),
        ("src/lib.rs".to_string(), fill(template.lib)),
        (format!("tests/{ident}.rs"), fill(template.test)),
        ("README.md".to_string(), fill(template.readme)),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    for (file, text) in &files {
        let path = staging.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(staging.path()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Renamed from its path, so a failure drops (removes) the staging directory.
    std::fs::rename(staging.path(), &dir).with_context(|| match std::fs::read_link(&dir) {
        Ok(pointed) => format!(
            "cannot create {}: it is a link to {}, which does not exist",
            dir.display(),
            pointed.display()
        ),
        Err(_) => format!("cannot create {}", dir.display()),
    })?;
    let _ = staging.keep();
    println!(
        "wrote {} ({} plugin `{ident}`): cd {} && cargo test && cargo build --release; README.md says how to load it",
        dir.display(),
        match args.kind {
            PluginKind::Reward => "reward",
            PluginKind::Dataset => "dataset",
        },
        dir.display()
    );
    Ok(())
}

fn sdk_path_dependency(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "--sdk {}: no crpo-sdk here (cannot read {})",
            dir.display(),
            manifest.display()
        )
    })?;
    if !text.contains("name = \"crpo-sdk\"") {
        bail!(
            "--sdk {}: {} is not crpo-sdk's",
            dir.display(),
            manifest.display()
        );
    }
    let dir = dir.canonicalize()?;
    Ok(format!(
        "{{ path = {} }}",
        toml_string(&dir.display().to_string())
    ))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reward named like a rule the template imports would not compile (E0255).
    #[test]
    fn a_reward_named_like_an_imported_rule_is_refused_before_writing() {
        let imported: Vec<&str> = imported_names(&REWARD).map(|(name, _)| name).collect();
        for name in [
            "reasoning",
            "clauses",
            "names_option",
            "chosen_letter",
            "score_one",
            "example_from_json",
        ] {
            assert!(imported.contains(&name), "{name}: {imported:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let args = NewArgs {
            kind: PluginKind::Reward,
            name: "reasoning".into(),
            dir: Some(dir.path().join("reasoning")),
            sdk: Some(dir.path().to_path_buf()),
            sdk_git: None,
        };
        let error = run(&[], &args).unwrap_err().to_string();
        assert!(
            error.contains("crpo_sdk::rules") && error.contains("nothing was written"),
            "{error}"
        );
        assert!(!dir.path().join("reasoning").exists());
    }
}
