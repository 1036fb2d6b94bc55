use super::error::FfiPluginError;
use crate::error::PluginError;
use abi_stable::std_types::{RResult, RString};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Whether this thread is inside an entry point whose panic becomes an error.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where the last caught panic happened (`src/lib.rs:12`), for its error.
    static PANIC_PLACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A plugin library has its own copy of std and so its own panic hook, which would print
/// "thread '<unnamed>' panicked at …" to the host's stderr before the host reports the error
/// cleanly. Within an entry point the hook only notes where the panic happened (the error
/// says it); anywhere else the hook that was there runs.
fn quiet_panics_within_entry_points() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let place = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_PLACE.with(|p| *p.borrow_mut() = place);
            } else {
                previous(info);
            }
        }));
    });
}

/// `call` with its panic caught quietly (see [`quiet_panics_within_entry_points`]).
fn caught<R>(call: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    quiet_panics_within_entry_points();
    let outer = CATCHING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(call));
    CATCHING.with(|c| c.set(outer));
    result
}

/// Runs a plugin entry point, turning a panic into an error instead of letting it reach
/// `extern "C"` (where abi_stable aborts the process).
pub fn catch_panic<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match caught(call) {
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
    match caught(call) {
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
    match PANIC_PLACE.with(|p| p.borrow_mut().take()) {
        Some(place) => format!("{what} panicked at {place}: {reason}"),
        None => format!("{what} panicked: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error() {
        let result: RResult<(), RString> = catch_panic("score_group", || panic!("bad index 7"));
        let line = line!() - 1;
        assert_eq!(
            result.unwrap_err().as_str(),
            format!("score_group panicked at sdk/src/ffi/panic.rs:{line}: bad index 7")
        );
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
