use abi_stable::std_types::{RResult, RString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a plugin entry point, turning a panic into an error instead of letting it reach
/// `extern "C"` (where abi_stable aborts the process).
pub fn catch_panic<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(message.into()),
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            RResult::RErr(format!("{what} panicked: {reason}").into())
        }
    }
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
