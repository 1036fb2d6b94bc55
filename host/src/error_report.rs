//! How a failed command's error reads: its chain of contexts, with a full disk said in words
//! (libraries below us report it as `IoError(Os { code: 28, kind: StorageFull, … })`).

/// The message `crpo-host` prints after `error: `; `resumable` for a command that continues
/// with `--resume` (train, sft).
pub fn describe(error: &anyhow::Error, resumable: bool) -> String {
    let disk_full = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
            || is_raw_disk_full(&cause.to_string())
    });
    if !disk_full {
        return format!("{error:#}");
    }
    let contexts: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !is_raw_disk_full(text) && !text.contains("No space left on device"))
        .collect();
    format!(
        "no space left on device while writing: {} (free some space and run again{})",
        contexts.join(": "),
        if resumable {
            "; the run continues with --resume"
        } else {
            ""
        }
    )
}

/// Makes a panic print its message and place in a few lines: libtorch's errors carry a page
/// of C++ frames (`\nframe #0: …`), and Rust's default hook adds a backtrace note. With
/// `RUST_BACKTRACE` set the default hook stays, trace and all. Call it first in `main`.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "crpo-host panicked{place}: {}\n(a bug, in crpo or in the plugin an error below names, or the machine ran out of memory; RUST_BACKTRACE=1 shows where it came from)",
            without_cpp_frames(&payload)
        );
    }));
}

/// `message` up to libtorch's C++ stack, which starts at its first `frame #` (on a line of
/// its own, or after an escaped `\n` when the error was printed with `{:?}`).
fn without_cpp_frames(message: &str) -> &str {
    let cut = ["\nframe #", "\\nframe #"]
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
    message[..cut].trim_end()
}

fn is_raw_disk_full(text: &str) -> bool {
    text.contains("StorageFull") || text.contains("os error 28") || text.contains("code: 28")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn libtorch_s_cpp_frames_are_cut_from_a_panic_s_message() {
        let debug = r#"called `Result::unwrap()` on an `Err` value: Torch("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000 bytes.\nframe #0: c10::ThrowEnforceNotMet + 0x6a\nframe #1: c10::alloc_cpu")"#;
        assert_eq!(
            without_cpp_frames(debug),
            r#"called `Result::unwrap()` on an `Err` value: Torch("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000 bytes."#
        );
        let display = "shape mismatch\nframe #0: at::native::foo\nframe #1: bar";
        assert_eq!(without_cpp_frames(display), "shape mismatch");
        assert_eq!(without_cpp_frames("index 2 out of range"), "index 2 out of range");
    }

    #[test]
    fn a_full_disk_is_said_in_words_with_the_file() {
        let raw = std::io::Error::from_raw_os_error(28);
        let error = Err::<(), _>(raw)
            .context("cannot write run/checkpoints/.tmp-step-000002/optimizer.safetensors")
            .unwrap_err();
        let text = describe(&error, true);
        assert_eq!(
            text,
            "no space left on device while writing: cannot write run/checkpoints/.tmp-step-000002/optimizer.safetensors (free some space and run again; the run continues with --resume)"
        );
        // As the safetensors crate prints it, inside a plain message.
        let debug = anyhow::anyhow!(
            "safetensors error model.safetensors: IoError(Os {{ code: 28, kind: StorageFull, message: \"No space left on device\" }})"
        )
        .context("policy `qwen2` cannot save to out/model");
        let text = describe(&debug, false);
        assert!(
            text.starts_with(
                "no space left on device while writing: policy `qwen2` cannot save to out/model"
            ),
            "{text}"
        );
        assert!(!text.contains("Os {") && !text.contains("--resume"), "{text}");
        let other = anyhow::anyhow!("plain").context("outer");
        assert_eq!(describe(&other, false), "outer: plain");
    }
}
