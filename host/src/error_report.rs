//! How a failed command's error reads: its chain of contexts, with a full disk said in words
//! (libraries below us report it as `IoError(Os { code: 28, kind: StorageFull, … })`).

/// The message `crpo-host` prints after `error: `.
pub fn describe(error: &anyhow::Error) -> String {
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
        "no space left on device while writing: {} (free some space and run again; a run resumes with --resume)",
        contexts.join(": ")
    )
}

fn is_raw_disk_full(text: &str) -> bool {
    text.contains("StorageFull") || text.contains("os error 28") || text.contains("code: 28")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_full_disk_is_said_in_words_with_the_file() {
        let raw = std::io::Error::from_raw_os_error(28);
        let error = Err::<(), _>(raw)
            .context("cannot write run/checkpoints/.tmp-step-000002/optimizer.safetensors")
            .unwrap_err();
        let text = describe(&error);
        assert_eq!(
            text,
            "no space left on device while writing: cannot write run/checkpoints/.tmp-step-000002/optimizer.safetensors (free some space and run again; a run resumes with --resume)"
        );
        // As the safetensors crate prints it, inside a plain message.
        let debug = anyhow::anyhow!(
            "safetensors error model.safetensors: IoError(Os {{ code: 28, kind: StorageFull, message: \"No space left on device\" }})"
        )
        .context("policy `qwen2` cannot save to out/model");
        let text = describe(&debug);
        assert!(
            text.starts_with(
                "no space left on device while writing: policy `qwen2` cannot save to out/model"
            ),
            "{text}"
        );
        assert!(!text.contains("Os {"), "{text}");
        let other = anyhow::anyhow!("plain").context("outer");
        assert_eq!(describe(&other), "outer: plain");
    }
}
