//! The errors of loading, saving and running a policy model, each naming the file or tensor.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// `from`: the files looked in, e.g. "m/model.safetensors" or "m's 3 shards (…index.json)".
    #[error("tensor `{name}` is missing from {from}")]
    MissingTensor { name: String, from: String },
    #[error("tensor `{name}` in {} has shape {found:?}, the config needs {expected:?}", file.display())]
    Shape {
        name: String,
        file: PathBuf,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("tensor `{name}` in {} has unsupported dtype {dtype}", file.display())]
    Dtype {
        name: String,
        file: PathBuf,
        dtype: String,
    },
    /// Reading an adapter failed; the sdk's message names the file.
    #[error("{0}")]
    Adapter(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PolicyError {
    let path = path.into();
    move |source| PolicyError::Io { path, source }
}

pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl ToString) -> PolicyError {
    PolicyError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}
