use super::error::FfiPluginError;
use crate::error::PluginError;
use abi_stable::std_types::{RResult, RString};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a plugin entry point, turning a panic into an error instead of letting it reach
/// `extern "C"` (where abi_stable aborts the process).
pub fn catch_panic<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(message.into()),
        Err(payload) => RResult::RErr(panicked(what, payload).into()),
    }
}

/// [`catch_panic`] for the typed entry points of sdk 1.4: the error keeps its kind and fields.
pub fn catch_panic_typed<T>(
    what: &str,
    call: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, FfiPluginError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(error.into()),
        Err(payload) => RResult::RErr(FfiPluginError::failed(panicked(what, payload))),
    }
}

fn panicked(what: &str, payload: Box<dyn Any + Send>) -> String {
    let reason = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    format!("{what} panicked: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error() {
        let result: RResult<(), RString> = catch_panic("score_group", || panic!("bad index 7"));
        assert_eq!(result.unwrap_err().as_str(), "score_group panicked: bad index 7");
    }

    #[test]
    fn values_and_errors_pass_through() {
        assert_eq!(catch_panic("f", || Ok::<_, String>(3)).unwrap(), 3);
        assert_eq!(
            catch_panic::<()>("f", || Err("no".into())).unwrap_err().as_str(),
            "no"
        );
    }
}
