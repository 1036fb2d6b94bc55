//! `python`: reward objectives written in Python with TRL's reward-function convention.
//!
//! Each objective names a `.py` file and a function in it:
//!
//! ```toml
//! [[reward.objectives]]
//! plugin = "python"
//! name = "format_reward"
//! weight = 1.0
//! options = { file = "rewards.py", function = "format_reward" }
//! ```
//!
//! The function is called once per group as GRPOTrainer calls it,
//! `f(prompts=…, completions=…, completion_ids=…, **columns)`, and returns one `float` or
//! `None` (not applicable) per completion. See docs/plugin-authoring.md, "Python reward
//! functions (TRL's convention)", for exactly what is passed.
//!
//! The interpreter is embedded in this library (the host never links Python). It is
//! initialised at the first `create`, without Python's signal handlers; the GIL is held only
//! inside `create` and `score_group`.

use crpo_sdk::{
    parse_options, Example, PluginError, PluginInfo, Prompt, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;
use serde::Deserialize;
use serde_json::Value;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Dataset columns TRL never passes as keyword arguments (or that would collide with the
/// arguments it always passes).
const RESERVED: [&str; 5] = ["prompt", "completion", "completion_ids", "prompts", "completions"];

/// The diagnostic set to 1 for a completion the function returned `None` for.
pub const NOT_APPLICABLE: &str = "not_applicable";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The `.py` file; a relative path is resolved against the current directory.
    file: PathBuf,
    /// The reward function's name in that file.
    function: String,
    /// Extra `sys.path` entries (the file's own directory is always added).
    #[serde(default)]
    python_path: Vec<PathBuf>,
}

pub struct PythonRewards;

impl RewardPlugin for PythonRewards {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "python",
            env!("CARGO_PKG_VERSION"),
            "a Python reward function with TRL's convention: options `file`, `function`; f(prompts, completions, completion_ids, **columns) -> list[float | None]",
        )
    }

    fn create(&self, options: &Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        let options: Options = parse_options(options)?;
        let file = resolve(&options.file)?;
        let python_path = options
            .python_path
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect::<Vec<_>>();
        make_python_symbols_global();
        check_python_home(std::env::var_os("PYTHONHOME").map(PathBuf::from).as_deref())?;
        Python::initialize();
        Python::attach(|py| {
            let helper = helper(py).map_err(|e| PluginError::failed(describe(py, &e, &file)))?;
            let directory = file.parent().unwrap_or(Path::new("/"));
            for entry in python_path.iter().map(PathBuf::as_path).chain([directory]) {
                helper
                    .call_method1("add_path", (entry.display().to_string(),))
                    .map_err(|e| PluginError::failed(describe(py, &e, &file)))?;
            }
            let module = helper
                .call_method1("load", (file.display().to_string(), module_name(&file)))
                .map_err(|e| {
                    PluginError::failed(format!(
                        "cannot load {}: {}",
                        file.display(),
                        describe(py, &e, &file)
                    ))
                })?;
            let function = module.getattr(options.function.as_str()).map_err(|_| {
                PluginError::invalid_option(
                    "function",
                    format!("{} defines no `{}`", file.display(), options.function),
                )
            })?;
            if !function.is_callable() {
                return Err(PluginError::invalid_option(
                    "function",
                    format!(
                        "`{}` in {} is not callable (type `{}`)",
                        options.function,
                        file.display(),
                        type_name(&function)
                    ),
                ));
            }
            Ok(Box::new(PythonFunction {
                function: function.unbind(),
                name: options.function,
                file,
            }) as Box<dyn RewardObjective>)
        })
    }
}

/// The options' `file`, absolute and existing.
fn resolve(file: &Path) -> Result<PathBuf, PluginError> {
    let cwd = std::env::current_dir().map_err(|e| PluginError::invalid_option("file", e))?;
    let path = cwd.join(file);
    if !path.is_file() {
        let relative = if file.is_relative() {
            format!(
                " (a relative `file` is resolved against the current directory, {})",
                cwd.display()
            )
        } else {
            String::new()
        };
        return Err(PluginError::invalid_option(
            "file",
            format!("{} is not a file{relative}", path.display()),
        ));
    }
    path.canonicalize()
        .map_err(|e| PluginError::invalid_option("file", format!("{}: {e}", path.display())))
}

/// One module per file, shared by every objective naming it (as one `import` would be).
fn module_name(file: &Path) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut hasher);
    let stem: String = file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("crpo_reward_{stem}_{:08x}", hasher.finish() as u32)
}

/// The reward function of one objective.
struct PythonFunction {
    function: Py<PyAny>,
    name: String,
    file: PathBuf,
}

impl PythonFunction {
    /// "`format_reward` (/path/rewards.py)": how every error names the function.
    fn label(&self) -> String {
        format!("python reward function `{}` ({})", self.name, self.file.display())
    }

    fn call<'py>(&self, py: Python<'py>, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        let n = request.completions.len();
        let kwargs = arguments(py, request).map_err(|e| {
            PluginError::failed(format!(
                "{}: cannot build its arguments: {}",
                self.label(),
                describe(py, &e, &self.file)
            ))
        })?;
        let result = self
            .function
            .bind(py)
            .call((), Some(&kwargs))
            .and_then(|result| awaited(py, result))
            .map_err(|e| {
                PluginError::failed(format!(
                    "{} raised {}",
                    self.label(),
                    describe(py, &e, &self.file)
                ))
            })?;
        let rewards =
            rewards(&result, n).map_err(|e| PluginError::failed(format!("{} {e}", self.label())))?;
        Ok(rewards
            .into_iter()
            .map(|reward| match reward {
                Some(value) => Score::new(value).with(NOT_APPLICABLE, 0.0),
                None => Score::new(0.0).with(NOT_APPLICABLE, 1.0),
            })
            .collect())
    }
}

impl RewardObjective for PythonFunction {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        Python::attach(|py| self.call(py, request))
    }
}

/// The event loop async reward functions run on: one for the process, as TRL keeps one for
/// the trainer's life, so a client a module made at import (an `AsyncOpenAI` judge, an
/// `httpx.AsyncClient`), bound to the loop of its first call, works for every later call.
static EVENT_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A `PYTHONHOME` without a standard library makes the interpreter's start end the process
/// ("Fatal Python error: init_fs_encoding"), before any error can be returned: refused first.
fn check_python_home(home: Option<&Path>) -> Result<(), PluginError> {
    let Some(home) = home else {
        return Ok(());
    };
    // PYTHONHOME may be `prefix:exec_prefix`; the standard library is under the prefix.
    let prefix = home
        .to_str()
        .and_then(|h| h.split(':').next())
        .map_or(home, Path::new);
    // `lib`, or `lib64` where the platform's libdir is that (Fedora's sys.platlibdir).
    let has_stdlib = ["lib", "lib64"].iter().any(|libdir| {
        std::fs::read_dir(prefix.join(libdir)).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("python3") && e.path().join("encodings").is_dir()
            })
        })
    });
    if has_stdlib {
        Ok(())
    } else {
        Err(PluginError::failed(format!(
            "PYTHONHOME={} has no Python standard library (lib/python3.*/encodings): the interpreter could not start; unset PYTHONHOME, or point it at the Python the plugin was built with",
            home.display()
        )))
    }
}

/// What an `async def` reward function's coroutine returns, run to its end on
/// [`EVENT_LOOP`] (TRL awaits async reward functions); any other result as it is.
fn awaited<'py>(py: Python<'py>, result: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let inspect = py.import("inspect")?;
    if !inspect.call_method1("iscoroutine", (&result,))?.is_truthy()? {
        return Ok(result);
    }
    let event_loop = EVENT_LOOP.get_or_try_init(py, || {
        py.import("asyncio")?
            .call_method0("new_event_loop")
            .map(Bound::unbind)
    })?;
    event_loop.bind(py).call_method1("run_until_complete", (result,))
}

/// TRL's keyword arguments for one group: `prompts`, `completions`, `completion_ids` and the
/// example's columns, each a list with one entry per completion.
fn arguments<'py>(py: Python<'py>, request: &ScoreRequest<'_>) -> PyResult<Bound<'py, PyDict>> {
    let n = request.completions.len();
    let example = request.example;
    let kwargs = PyDict::new(py);
    let repeat = |value: Bound<'py, PyAny>| PyList::new(py, std::iter::repeat_n(value, n));
    let (prompts, completions) = match &example.prompt {
        Prompt::Text(text) => (
            repeat(PyString::new(py, text).into_any())?,
            PyList::new(py, request.completions.iter().map(|c| PyString::new(py, c)))?,
        ),
        Prompt::Messages(messages) => {
            let prompt = PyList::empty(py);
            for message in messages {
                prompt.append(message_dict(py, &message.role, &message.content)?)?;
            }
            let completions = request
                .completions
                .iter()
                .map(|c| PyList::new(py, [message_dict(py, "assistant", c)?]))
                .collect::<PyResult<Vec<_>>>()?;
            (repeat(prompt.into_any())?, PyList::new(py, completions)?)
        }
    };
    kwargs.set_item("prompts", prompts)?;
    kwargs.set_item("completions", completions)?;
    if request.completion_ids.is_empty() {
        kwargs.set_item("completion_ids", py.None())?;
    } else {
        let ids = request
            .completion_ids
            .iter()
            .map(|ids| PyList::new(py, ids))
            .collect::<PyResult<Vec<_>>>()?;
        kwargs.set_item("completion_ids", PyList::new(py, ids)?)?;
    }
    for (key, value) in columns(example) {
        kwargs.set_item(key, repeat(to_python(py, &value)?)?)?;
    }
    Ok(kwargs)
}

/// The example's dataset columns as TRL would pass them: every metadata key (but the
/// reserved ones), `answer` (the gold, `None` without one) and `options` (key → text, when the
/// example has options), unless metadata already has a column of that name.
pub fn columns(example: &Example) -> Vec<(String, Value)> {
    let metadata = &example.metadata;
    // A column other records have and this one lacks is null here (crpo-host fills them, as
    // `datasets` does): for `answer` and `options` the example's own stand in for it.
    let has = |key: &str| metadata.get(key).is_some_and(|value| !value.is_null());
    let stand_in = |key: &str| match key {
        "answer" => !has("answer"),
        "options" => !has("options") && !example.options.is_empty(),
        _ => false,
    };
    let mut columns: Vec<(String, Value)> = metadata
        .iter()
        .filter(|(key, _)| !RESERVED.contains(&key.as_str()) && !stand_in(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if stand_in("answer") {
        columns.push((
            "answer".into(),
            example.answer.clone().map_or(Value::Null, Value::String),
        ));
    }
    if stand_in("options") {
        let options = example
            .options
            .iter()
            .map(|o| (o.key.clone(), Value::String(o.text.clone())))
            .collect();
        columns.push(("options".into(), Value::Object(options)));
    }
    columns
}

fn message_dict<'py>(py: Python<'py>, role: &str, content: &str) -> PyResult<Bound<'py, PyDict>> {
    let message = PyDict::new(py);
    message.set_item("role", role)?;
    message.set_item("content", content)?;
    Ok(message)
}

/// JSON as Python: `null` → `None`, objects → dicts (in order), arrays → lists.
fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_bound_py_any(py),
            (None, Some(u)) => u.into_bound_py_any(py),
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py),
        },
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|v| to_python(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, value) in map {
                dict.set_item(key, to_python(py, value)?)?;
            }
            Ok(dict.into_any())
        }
    }
}

/// The function's result as `n` finite rewards or `None`s; the error completes
/// "<function> …".
fn rewards(result: &Bound<'_, PyAny>, n: usize) -> Result<Vec<Option<f32>>, String> {
    let not_a_list = || {
        format!(
            "returned a {}, not a list of float | None (one per completion)",
            type_name(result)
        )
    };
    if result.is_instance_of::<PyString>()
        || result.is_instance_of::<PyBytes>()
        || result.is_instance_of::<PyDict>()
    {
        return Err(not_a_list());
    }
    // One more than wanted at most: a generator without end is not read to the end of memory.
    let items = result
        .try_iter()
        .map_err(|_| not_a_list())?
        .take(n + 1)
        .collect::<PyResult<Vec<_>>>()
        .map_err(|_| not_a_list())?;
    if items.len() != n {
        let count = match result.len() {
            Ok(length) => length.to_string(),
            Err(_) if items.len() > n => format!("more than {n}"),
            Err(_) => items.len().to_string(),
        };
        return Err(format!(
            "returned {count} rewards for {n} completions: return exactly one float or None per completion"
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            if item.is_none() {
                return Ok(None);
            }
            let bad = |why: &str| format!("returned {} at index {index}: {why}", short_repr(item));
            if item.is_instance_of::<PyString>() || item.is_instance_of::<PyBytes>() {
                return Err(bad("not a float or None"));
            }
            let value: f64 = item.extract::<f64>().map_err(|error: PyErr| {
                // float(10**400) overflows: a number, but no float holds it.
                if error.is_instance_of::<pyo3::exceptions::PyOverflowError>(item.py()) {
                    bad("beyond the range of a reward (a 32-bit float)")
                } else {
                    bad("not a float or None")
                }
            })?;
            if value.is_finite() && !(value as f32).is_finite() {
                return Err(bad("beyond the range of a reward (a 32-bit float)"));
            }
            let value = value as f32;
            if value.is_finite() {
                Ok(Some(value))
            } else {
                Err(bad(
                    "rewards must be finite (return None when a reward does not apply)",
                ))
            }
        })
        .collect()
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |name| name.to_string())
}

fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value.repr().map_or_else(|_| "?".into(), |r| r.to_string());
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short} ({})", type_name(value))
}

/// "ZeroDivisionError: division by zero at /path/rewards.py:12: `return 1 / 0`": the
/// exception and the innermost line of `file` it passed through (of any file otherwise; a
/// syntax error's own line).
fn describe(py: Python<'_>, err: &PyErr, file: &Path) -> String {
    let kind = err
        .get_type(py)
        .name()
        .map_or_else(|_| "exception".into(), |n| n.to_string());
    let value = err.value(py);
    let message = value.str().map_or_else(|_| String::new(), |s| s.to_string());
    let mut text = if message.is_empty() {
        kind
    } else {
        format!("{kind}: {message}")
    };
    let place = helper(py)
        .and_then(|h| h.call_method1("where", (value, err.traceback(py), file.display().to_string())))
        .and_then(|place| place.extract::<Option<(String, usize, String)>>());
    if let Ok(Some((path, line, code))) = place {
        text.push_str(&format!(" at {path}:{line}"));
        if !code.is_empty() {
            text.push_str(&format!(": `{code}`"));
        }
    }
    text
}

/// The Python side: sys.path, loading a file as a module, and where an exception was raised.
const HELPER: &std::ffi::CStr = cr#"
import importlib.machinery, importlib.util, os, site, sys, traceback

def setup(site_dirs, executable):
    for d in site_dirs:
        if d and os.path.isdir(d) and d not in sys.path:
            site.addsitedir(d)
    # multiprocessing and subprocess calls use sys.executable: not the host's binary.
    if executable and os.path.exists(executable):
        sys.executable = executable
    # A reward's print() goes to the log, never into the host's output (`score` writes JSONL
    # to standard output).
    sys.stdout = sys.stderr

def add_path(entry):
    if entry not in sys.path:
        sys.path.insert(0, entry)

def load(path, name):
    module = sys.modules.get(name)
    if module is not None:
        return module
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

def where(exc, tb, path):
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return (exc.filename, exc.lineno, (exc.text or "").strip())
    frames = traceback.extract_tb(tb or exc.__traceback__)
    inside = [f for f in frames if f.filename == path] or frames
    if not inside:
        return None
    frame = inside[-1]
    return (frame.filename, frame.lineno or 0, (frame.line or "").strip())
"#;

/// The helper module, made once; the first time also makes the venv's packages importable.
fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static HELPER_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    HELPER_MODULE
        .get_or_try_init(py, || {
            let module = PyModule::from_code(py, HELPER, c"<crpo python rewards>", c"_crpo_python_rewards")?;
            let (site_dirs, executable) = venv_site(py)?;
            module.call_method1("setup", (site_dirs, executable))?;
            Ok::<_, PyErr>(module.unbind())
        })
        .map(|module| module.bind(py))
}

/// The site-packages to add: `$VIRTUAL_ENV`'s when set, else those of the venv this library
/// was built against (recorded by build.rs); and that venv's python for `sys.executable`.
fn venv_site(py: Python<'_>) -> PyResult<(Vec<String>, String)> {
    let version = py.import("sys")?.getattr("version_info")?;
    let (major, minor): (u8, u8) = (
        version.getattr("major")?.extract()?,
        version.getattr("minor")?.extract()?,
    );
    match std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        Some(venv) => {
            let venv = PathBuf::from(venv);
            let site = venv.join(format!("lib/python{major}.{minor}/site-packages"));
            Ok((
                vec![site.display().to_string()],
                venv.join("bin/python").display().to_string(),
            ))
        }
        None => Ok((
            vec![env!("CRPO_PYTHON_SITE_PACKAGES").to_string()],
            Path::new(env!("CRPO_PYTHON_PREFIX"))
                .join("bin/python")
                .display()
                .to_string(),
        )),
    }
}

/// The host dlopens this library with its symbols local, and libpython with it; extension
/// modules (`math`, `_json`, numpy) are not linked against libpython and need its symbols
/// global. Re-opening the already-loaded libpython with RTLD_GLOBAL makes them so.
#[cfg(target_os = "linux")]
fn make_python_symbols_global() {
    use std::ffi::{c_char, c_int, c_void};
    #[repr(C)]
    struct DlInfo {
        fname: *const c_char,
        fbase: *mut c_void,
        sname: *const c_char,
        saddr: *mut c_void,
    }
    unsafe extern "C" {
        fn dladdr(address: *const c_void, info: *mut DlInfo) -> c_int;
        fn dlopen(file: *const c_char, flags: c_int) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;
    const RTLD_NOLOAD: c_int = 4;
    const RTLD_GLOBAL: c_int = 0x100;
    let mut info = DlInfo {
        fname: std::ptr::null(),
        fbase: std::ptr::null_mut(),
        sname: std::ptr::null(),
        saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr fills `info` for an address inside libpython; dlopen with RTLD_NOLOAD
    // only changes the flags of a library that is already loaded (its handle stays open, as
    // libpython does for the life of the process anyway).
    unsafe {
        let address = pyo3::ffi::Py_IsInitialized as *const c_void;
        if dladdr(address, &mut info) != 0 && !info.fname.is_null() {
            dlopen(info.fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn make_python_symbols_global() {}

crpo_sdk::export_plugin_library! {
    rewards: [PythonRewards],
    datasets: [],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column the record lacked (null) reaches the function as None, but for `answer` and
    /// `options`, whose places the example's own gold and options take.
    #[test]
    fn a_null_answer_column_gives_way_to_the_gold() {
        let mut example = Example {
            answer: Some("B".into()),
            ..Example::default()
        };
        example.metadata.insert("answer".into(), Value::Null);
        example.metadata.insert("source".into(), Value::Null);
        let columns: std::collections::HashMap<String, Value> = columns(&example).into_iter().collect();
        assert_eq!(columns["answer"], "B");
        assert_eq!(columns["source"], Value::Null);
        assert!(!columns.contains_key("options"), "no options to stand in");
    }

    /// A PYTHONHOME without a standard library is refused before the interpreter starts (it
    /// would end the process); one with it, or none, passes.
    #[test]
    fn a_python_home_without_a_standard_library_is_refused() {
        assert!(check_python_home(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let error = check_python_home(Some(dir.path())).unwrap_err().to_string();
        assert!(
            error.contains("PYTHONHOME=") && error.contains("unset PYTHONHOME"),
            "{error}"
        );
        std::fs::create_dir_all(dir.path().join("lib64/python3.11/encodings")).unwrap();
        assert!(check_python_home(Some(dir.path())).is_ok(), "Fedora's lib64");
        let both = format!("{}:/elsewhere", dir.path().display());
        assert!(check_python_home(Some(Path::new(&both))).is_ok());
    }
}
